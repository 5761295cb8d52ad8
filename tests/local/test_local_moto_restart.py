"""moto killed: supervisord restarts it and it comes back with the stack's queues, the DLQ redrive
policy and the buckets, without a new `up` (local/moto_server.py); a job through the load balancer
then completes. What moto held when it died (messages, objects) is lost, as the README says.

This file sorts before test_local_stack.py, so it runs on the session's stack before `down`.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid

import pytest
from conftest import RunningStack
from test_local_stack import _api, _aws

from local.waiting import wait_for
from local.wiring import queue_settings

pytestmark = pytest.mark.integration


def _resources_back(running: RunningStack) -> bool:
    """Both queues with the redrive policy `up` sets, and both buckets versioned."""
    sqs, s3, out = _aws(running, "sqs"), _aws(running, "s3"), running.outputs
    dlq = sqs.get_queue_attributes(QueueUrl=out.dead_letter_queue_url, AttributeNames=["QueueArn"])["Attributes"]
    attributes = sqs.get_queue_attributes(QueueUrl=out.queue_url, AttributeNames=["RedrivePolicy"])["Attributes"]
    expected = {"deadLetterTargetArn": dlq["QueueArn"], "maxReceiveCount": queue_settings().max_receive_count}
    assert json.loads(attributes["RedrivePolicy"]) == expected
    for bucket in (out.artifacts_bucket, out.backups_bucket):
        assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    return True


def test_a_killed_moto_comes_back_with_its_queues_and_buckets(running: RunningStack):
    sup = running.stack.supervisor
    old_pid = sup.info()["moto"]["pid"]
    killed = time.monotonic()
    os.kill(old_pid, signal.SIGKILL)
    wait_for("supervisord to restart moto", lambda: sup.info()["moto"]["pid"] not in (0, old_pid), 30)
    wait_for("the queues, redrive policy and buckets", lambda: _resources_back(running), 60)
    healed_s = time.monotonic() - killed
    with _api(running) as api:
        # The API and workers reconnect on their own: the job goes through the load balancer and SQS.
        job = api.post("/api/v1/jobs", json={"series": [1.0, 1.1, 0.9, 1.0, 25.0], "job_id": str(uuid.uuid4())})
        assert job.status_code == 202, job.text

        def finished():
            state = api.get(f"/api/v1/jobs/{job.json()['job']['id']}").json()["job"]
            return state if state["status"] in ("completed", "failed") else None

        done = wait_for("the worker to finish the job", finished, 60, interval_s=0.3)
    job_s = time.monotonic() - killed
    print(f"\nmoto back with its queues and buckets {healed_s:.1f}s after SIGKILL; job done at {job_s:.1f}s")
    assert done["status"] == "completed", done
    assert _aws(running, "s3").head_object(Bucket=running.outputs.artifacts_bucket, Key=done["result_key"])
