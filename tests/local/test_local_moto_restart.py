"""moto killed: supervisord restarts it and it comes back with the stack's queues, the DLQ redrive
policy and the buckets, without a new `up` (local/moto_server.py); a job through the load balancer
then completes. What moto held when it died (messages, objects) is lost, as the README says."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from conftest import RunningStack, api, aws, instances_ready

from local import faults, probes
from local.waiting import wait_for
from local.wiring import queue_settings

pytestmark = pytest.mark.integration


def _resources(running: RunningStack) -> dict[str, object]:
    """The redrive policy of the job queue, the DLQ's ARN and each bucket's versioning, as moto reports them.
    Raises while any is missing (moto still down, or the wrapper still creating them)."""
    sqs, s3, out = aws(running, "sqs"), aws(running, "s3"), running.outputs
    buckets = (out.artifacts_bucket, out.backups_bucket)
    dlq = sqs.get_queue_attributes(QueueUrl=out.dead_letter_queue_url, AttributeNames=["QueueArn"])["Attributes"]
    attributes = sqs.get_queue_attributes(QueueUrl=out.queue_url, AttributeNames=["RedrivePolicy"])["Attributes"]
    return {
        "redrive": json.loads(attributes["RedrivePolicy"]),
        "dlq_arn": dlq["QueueArn"],
        "versioning": [s3.get_bucket_versioning(Bucket=bucket)["Status"] for bucket in buckets],
    }


def test_a_killed_moto_comes_back_with_its_queues_and_buckets(running: RunningStack):
    state = running.state
    # The precondition: a stack that serves. `up` waits for /health; an instance just started may still be
    # migrating its schema (/ready 503), which would fail the job below for a reason that is not moto.
    wait_for("every instance ready", lambda: all(r["status"] == "ready" for r in instances_ready(running)), 60)
    killed = faults.kill_process("moto", state_dir=state)
    t_killed = time.monotonic()
    probes.wait_for_process_replaced("moto", killed["pid"], 30, state_dir=state)
    back = wait_for("the queues, redrive policy and buckets", lambda: _resources(running), 60)
    healed_s = time.monotonic() - t_killed
    expected = {"deadLetterTargetArn": back["dlq_arn"], "maxReceiveCount": queue_settings().max_receive_count}
    assert back["redrive"] == expected
    assert back["versioning"] == ["Enabled", "Enabled"]
    with api(running) as client:
        # The API and workers reconnect on their own: the job goes through the load balancer and SQS.
        job = client.post("/api/v1/jobs", json={"series": [1.0, 1.1, 0.9, 1.0, 25.0], "job_id": str(uuid.uuid4())})
        assert job.status_code == 202, job.text

        def finished() -> dict | None:
            current = client.get(f"/api/v1/jobs/{job.json()['job']['id']}").json()["job"]
            return current if current["status"] in ("completed", "failed") else None

        done = wait_for("the worker to finish the job", finished, 60, interval_s=0.3)
    job_s = time.monotonic() - t_killed
    print(f"\nmoto back with its queues and buckets {healed_s:.1f}s after SIGKILL; job done at {job_s:.1f}s")
    assert done["status"] == "completed", done
    assert aws(running, "s3").head_object(Bucket=running.outputs.artifacts_bucket, Key=done["result_key"])
