"""Batch jobs: API -> SQS -> worker -> S3 + PostgreSQL, idempotent by id within each API key's own
namespace, graceful, dead-lettered."""

from __future__ import annotations

import json
import signal
import uuid

import httpx
import numpy as np
import pytest
from servers import wait_until
from service_testkit import (
    MAX_RECEIVE_COUNT,
    api_client,
    metric_value,
    new_aws,
    queue_depth,
    result_objects,
    start_worker,
    worker_metrics_url,
)

from pynomaly_ops import metrics
from pynomaly_ops.settings import schema
from service import store
from service.storage import result_key

pytestmark = pytest.mark.integration
OUR_KEY = "bootstrap"  # the name the service gives PYNOMALY_BOOTSTRAP_API_KEY, the conftest client's key


@pytest.fixture
def worker_factory(postgres, moto, api_key, tmp_path):
    started = []

    def start(aws, **overrides):
        worker = start_worker(postgres, moto, aws, api_key, tmp_path, **overrides)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def job_status(db, job_id) -> tuple[str, int] | None:
    return db.execute("SELECT status, attempts FROM jobs WHERE id = %s", (job_id,)).fetchone()


def worker_jobs(worker, status: str) -> float:
    return metric_value(httpx.get(worker_metrics_url(worker)).text, metrics.JOBS, status=status)


def series(n: int, seed: int = 0) -> list[float]:
    values = np.random.default_rng(seed).normal(0, 1, n)
    values[n // 3] = 30.0
    return values.round(6).tolist()


def test_a_job_runs_end_to_end(client, aws, moto, db, worker_factory):
    reply = client.post("/api/v1/jobs", json={"series": series(2000), "contamination": 0.01})
    assert reply.status_code == 202, reply.text
    job_id = reply.json()["job"]["id"]
    assert reply.json()["job"]["status"] == "queued"
    worker = worker_factory(aws)
    wait_until(lambda: client.get(f"/api/v1/jobs/{job_id}").json()["job"]["status"] == "completed", 60, "job done")
    body = client.get(f"/api/v1/jobs/{job_id}", params={"result": "true"}).json()
    assert body["job"]["result_key"] == result_key(OUR_KEY, job_id)
    assert len(body["result"]["scores"]) == 2000 and body["result"]["flags"][2000 // 3] is True
    assert body["job"]["n_flagged"] == sum(body["result"]["flags"])
    assert worker_jobs(worker, "completed") == 1
    assert 0 <= metric_value(httpx.get(worker_metrics_url(worker)).text, metrics.JOB_PROCESSING_LAG) < 60


def test_resubmitting_a_job_id_returns_the_same_job(client, db):
    job_id = str(uuid.uuid4())
    first = client.post("/api/v1/jobs", json={"series": [1, 2, 3], "job_id": job_id})
    again = client.post("/api/v1/jobs", json={"series": [1, 2, 3], "job_id": job_id})
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["job"]["id"] == job_id
    conflict = client.post("/api/v1/jobs", json={"series": [1, 2, 4], "job_id": job_id})
    assert conflict.status_code == 409 and conflict.json()["error"]["field"] == "job_id"
    assert db.execute("SELECT count(*) FROM jobs WHERE id = %s", (job_id,)).fetchone() == (1,)


def test_a_message_delivered_twice_yields_one_result(client, aws, moto, db, worker_factory):
    job_id = client.post("/api/v1/jobs", json={"series": series(500, seed=5)}).json()["job"]["id"]
    duplicate = json.dumps({"key_name": OUR_KEY, "job_id": job_id, "submitted_at": 0})
    moto.client("sqs").send_message(QueueUrl=aws.queue_url, MessageBody=duplicate)  # the redelivery
    worker = worker_factory(aws)
    wait_until(lambda: queue_depth(moto, aws.queue_url) == 0 and job_status(db, job_id)[0] == "completed", 60, "drain")
    assert job_status(db, job_id) == ("completed", 1)
    assert result_objects(moto, aws.bucket, job_id) == [result_key(OUR_KEY, job_id)]
    assert worker.tail().count(f"job {job_id} completed") == 1
    assert f"duplicate message for completed job {job_id}" in worker.tail()
    # The queue may hold other tests' jobs too: every completion counted is a distinct job.
    name = f"{worker.env['PYNOMALY_INSTANCE_ID']}-{worker.proc.pid}"
    done = db.execute("SELECT count(*) FROM jobs WHERE worker = %s AND status = 'completed'", (name,)).fetchone()[0]
    assert worker_jobs(worker, "completed") == done
    assert worker_jobs(worker, "failed") == 0


def test_another_keys_job_id_is_a_job_of_its_own(api, client, other_key, aws, moto, worker_factory):
    """Job ids are per key: key B reusing key A's id neither learns that A's job exists nor conflicts with
    it; B gets a job of its own, and each key reads its own job and result."""
    key_b, name_b = other_key
    job_id, random_id = str(uuid.uuid4()), str(uuid.uuid4())
    ours, theirs = (
        {"series": series(300, seed=21), "job_id": job_id},
        {"series": series(400, seed=22), "job_id": job_id},
    )
    assert client.post("/api/v1/jobs", json=ours).status_code == 202
    with api_client(api.base_url, key_b) as other:
        unseen, missing = other.get(f"/api/v1/jobs/{job_id}"), other.get(f"/api/v1/jobs/{random_id}")
        assert (unseen.status_code, missing.status_code) == (404, 404)
        assert unseen.json() == json.loads(missing.text.replace(random_id, job_id))  # the same answer, id aside
        submitted = other.post("/api/v1/jobs", json=theirs)
        assert submitted.status_code == 202, submitted.text
        assert (submitted.json()["job"]["id"], submitted.json()["job"]["status"]) == (job_id, "queued")
        assert other.post("/api/v1/jobs", json=theirs).status_code == 200  # idempotent within the key
        assert other.post("/api/v1/jobs", json=ours).status_code == 409  # B's own job has other input
        assert client.post("/api/v1/jobs", json=ours).status_code == 200  # A's job is untouched
        worker_factory(aws)

        def both_done() -> bool:
            return all(c.get(f"/api/v1/jobs/{job_id}").json()["job"]["status"] == "completed" for c in (client, other))

        wait_until(both_done, 60, "both keys' jobs completed")
        mine, yours = (c.get(f"/api/v1/jobs/{job_id}", params={"result": "true"}).json() for c in (client, other))
    assert (mine["job"]["result_key"], yours["job"]["result_key"]) == (
        result_key(OUR_KEY, job_id),
        result_key(name_b, job_id),
    )
    assert (len(mine["result"]["scores"]), len(yours["result"]["scores"])) == (300, 400)
    assert result_objects(moto, aws.bucket, job_id) == sorted([result_key(OUR_KEY, job_id), result_key(name_b, job_id)])
    wait_until(lambda: queue_depth(moto, aws.queue_url) == 0, 30, "the queue drained")


def test_a_message_from_before_per_key_jobs_runs_its_ids_only_job(pool, other_key, moto, db, worker_factory):
    """A message sent before jobs were per key names no key. Ids were unique across keys then, so it runs the
    one job of its id; if another key has since taken that id, which job it meant is unknown: poison."""
    _, name_b = other_key
    alone, shared = uuid.uuid4(), uuid.uuid4()
    options = {"method": "residual", "contamination": "auto", "threshold": None}
    for job in (store.JobRef(OUR_KEY, alone), store.JobRef(OUR_KEY, shared), store.JobRef(name_b, shared)):
        store.create_job(pool, job, "legacy", series(200, seed=23), options)
    legacy = new_aws(moto)  # a queue of its own: only the old messages are in it
    sqs = moto.client("sqs")
    for job_id in (alone, shared):
        sqs.send_message(QueueUrl=legacy.queue_url, MessageBody=json.dumps({"job_id": str(job_id), "submitted_at": 0}))
    worker = worker_factory(legacy)
    wait_until(lambda: queue_depth(moto, legacy.dead_letter_queue_url) == 1, 60, "the ambiguous message dead-lettered")
    wait_until(lambda: job_status(db, alone) == ("completed", 1), 30, "the old message's job completed")
    assert result_objects(moto, legacy.bucket, str(alone)) == [result_key(OUR_KEY, str(alone))]
    assert db.execute("SELECT DISTINCT status FROM jobs WHERE id = %s", (shared,)).fetchall() == [("queued",)]
    assert f"job {alone} has one key" in worker.tail()
    assert f"names job {shared}, which several keys have" in worker.tail()


def test_sigterm_hands_the_in_flight_message_back(client, aws, moto, db, worker_factory):
    """The queue's visibility timeout is long (30 s): the message is back at once only if the worker released it."""
    heavy = {"series": series(100_000, seed=6), "n_estimators": 200}
    job_id = client.post("/api/v1/jobs", json=heavy).json()["job"]["id"]
    worker = worker_factory(aws)
    wait_until(lambda: job_status(db, job_id)[0] == "running", 60, "the worker to pick the job up")
    worker.signal(signal.SIGTERM)
    assert worker.proc.wait(30) == 0, worker.tail()
    assert job_status(db, job_id) == ("queued", 1)
    sqs = moto.client("sqs")
    reply = sqs.receive_message(QueueUrl=aws.queue_url, WaitTimeSeconds=5, AttributeNames=["ApproximateReceiveCount"])
    messages = reply.get("Messages", [])
    assert [json.loads(m["Body"])["job_id"] for m in messages] == [job_id]
    sqs.delete_message(QueueUrl=aws.queue_url, ReceiptHandle=messages[0]["ReceiptHandle"])
    assert "handed back to the queue" in worker.tail()


def test_poison_messages_land_in_the_dead_letter_queue(moto, db, postgres, api_key, worker_factory, client):
    """With production's visibility timeout (300 s), poison is handed back at once: dead-lettered in seconds,
    where waiting out the timeout at each of the max_receive_count receives would take 25 minutes."""
    fast = new_aws(moto, visibility_timeout_s=int(schema()["queue.visibility_timeout_s"]["default"]))
    sqs = moto.client("sqs")
    sqs.send_message(QueueUrl=fast.queue_url, MessageBody="this is not a job")
    unknown = json.dumps({"job_id": str(uuid.uuid4()), "submitted_at": 0})
    sqs.send_message(QueueUrl=fast.queue_url, MessageBody=unknown)
    worker = worker_factory(fast)

    def dead_lettered() -> bool:
        attrs = sqs.get_queue_attributes(QueueUrl=fast.dead_letter_queue_url, AttributeNames=["All"])["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) == 2

    wait_until(dead_lettered, 60, "both messages in the dead-letter queue", interval_s=0.2)
    assert queue_depth(moto, fast.queue_url) == 0
    assert worker_jobs(worker, "failed") == 2 * MAX_RECEIVE_COUNT
