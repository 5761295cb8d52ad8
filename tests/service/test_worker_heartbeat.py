"""A job that outlasts the queue's visibility timeout: the worker's heartbeat keeps its message hidden
and its claim renewed, so a second, idle worker never receives it and the job runs once."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from servers import ServiceProcess, wait_until
from service_testkit import new_aws, queue_depth, result_objects, service_env, start_worker

from service.storage import result_key

pytestmark = pytest.mark.integration

VISIBILITY_S = 2
# 200 trees over 400,000 points: about 8 s of detection on the 2-core machine, four visibility timeouts.
POINTS = 400_000
TREES = 200


@pytest.fixture(scope="module")
def aws(moto):
    return new_aws(moto, visibility_timeout_s=VISIBILITY_S)


@pytest.fixture(scope="module")
def api(postgres, redis_server, moto, aws, api_key, tmp_path_factory) -> Iterator[ServiceProcess]:
    """The conftest's API, but accepting a series long enough to make a slow job."""
    env = service_env(postgres, redis_server.url, moto, aws, api_key, PYNOMALY_MAX_SERIES_LENGTH=str(POINTS))
    proc = ServiceProcess("service.api", env, tmp_path_factory.mktemp("api")).start(wait_for="/health")
    wait_until(lambda: httpx.get(proc.base_url + "/ready").status_code == 200, 60, f"ready\n{proc.tail()}")
    yield proc
    proc.stop()


def run_seconds(db, job_id: str) -> float:
    row = db.execute("SELECT extract(epoch FROM finished_at - started_at) FROM jobs WHERE id = %s", (job_id,))
    return float(row.fetchone()[0])


def test_a_job_longer_than_the_visibility_timeout_is_received_once(client, aws, moto, db, postgres, api_key, tmp_path):
    workers = [start_worker(postgres, moto, aws, api_key, tmp_path) for _ in range(2)]  # one busy, one idle
    try:
        series = np.random.default_rng(7).normal(0, 1, POINTS).round(6).tolist()
        reply = client.post("/api/v1/jobs", json={"series": series, "n_estimators": TREES}, timeout=60)
        assert reply.status_code == 202, reply.text
        job_id = reply.json()["job"]["id"]
        held_late = []  # sampled after two timeouts of running: is the claim in PostgreSQL still ours?

        def done() -> bool:
            status, held, late = db.execute(
                "SELECT status, lease_until > now(), now() - started_at > make_interval(secs => %s)"
                " FROM jobs WHERE id = %s",
                (2 * VISIBILITY_S, job_id),
            ).fetchone()
            if status == "running" and late:
                held_late.append(held)
            return status == "completed"

        wait_until(done, 180, "the job to complete", interval_s=0.2)
        wait_until(lambda: queue_depth(moto, aws.queue_url) == 0, 10, "the message deleted")
    finally:
        for worker in workers:
            worker.stop()
    logs = "".join(worker.tail(200_000) for worker in workers)
    seconds = run_seconds(db, job_id)
    print(f"\njob ran {seconds:.1f}s with a {VISIBILITY_S}s visibility timeout")
    assert seconds > 2 * VISIBILITY_S, "the job was too fast to prove anything: raise POINTS"
    assert db.execute("SELECT status, attempts FROM jobs WHERE id = %s", (job_id,)).fetchone() == ("completed", 1)
    # A duplicate delivery (standard SQS allows one) must still find the job held: the lease is renewed too.
    assert held_late and all(held_late), held_late
    assert logs.count(f"job {job_id} completed on receive 1:") == 1, logs[-3000:]
    assert f"job {job_id} is held by another worker" not in logs
    assert result_objects(moto, aws.bucket, job_id) == [result_key("bootstrap", job_id)]
    assert queue_depth(moto, aws.dead_letter_queue_url) == 0
