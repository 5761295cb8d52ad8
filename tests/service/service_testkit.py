"""Helpers for the service's tests, in a module with a name of its own (every test folder has a
``conftest``): environments for the service processes, metric parsing, queue inspection."""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import psycopg
from servers import AwsResources, MotoServer, PostgresServer, RedisServer, ServiceProcess, free_port, wait_until

from pynomaly_ops.settings import schema
from service.auth import hash_key

# The redrive policy's maxReceiveCount, from the one place it is set (Pulumi.yaml's config defaults).
T = TypeVar("T")
MAX_RECEIVE_COUNT = int(schema()["queue.max_receive_count"]["default"])


def serving(server: T) -> Iterator[T]:
    """Yield a started server; clean it up (stop, delete its files) afterwards."""
    try:
        yield server
    finally:
        server.cleanup()  # type: ignore[attr-defined]


def own_redis() -> Iterator[RedisServer]:
    yield from serving(RedisServer().start())


def new_aws(moto: MotoServer, visibility_timeout_s: int = 30) -> AwsResources:
    return moto.provision(f"t{uuid.uuid4().hex[:10]}", visibility_timeout_s, MAX_RECEIVE_COUNT)


def service_env(
    postgres: PostgresServer, redis_url: str, moto: MotoServer, aws: AwsResources, api_key: str, **overrides: str
) -> dict[str, str]:
    env = {
        "PYNOMALY_HOST": "127.0.0.1",
        "PYNOMALY_PORT": str(free_port()),
        "PYNOMALY_INSTANCE_ID": f"test-{uuid.uuid4().hex[:6]}",
        "PYNOMALY_DB_DSN": postgres.dsn(),
        "PYNOMALY_DB_CONNECT_TIMEOUT_S": "2",
        "PYNOMALY_REDIS_URL": redis_url,
        "PYNOMALY_AWS_ENDPOINT_URL": aws.endpoint_url,
        "PYNOMALY_QUEUE_URL": aws.queue_url,
        "PYNOMALY_ARTIFACTS_BUCKET": aws.bucket,
        "PYNOMALY_BOOTSTRAP_API_KEY": api_key,
        "PYNOMALY_DETECTOR_PROCESSES": "1",
        "PYNOMALY_WORKER_WAIT_S": "1",
        "PYNOMALY_AUTH_CACHE_S": "1",  # so the revocation test waits one second, not ten
        **moto.aws_env(),
    }
    env.update(overrides)
    return env


def api_client(base_url: str, api_key: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30)


def add_api_key(conn: psycopg.Connection, prefix: str) -> tuple[str, str]:
    """A new key, stored as the service stores one (its hash, under a name of its own): (key, name)."""
    key, name = secrets.token_urlsafe(32), f"{prefix}-{uuid.uuid4().hex[:8]}"
    conn.execute("INSERT INTO api_keys (key_hash, name) VALUES (%s, %s)", (hash_key(key), name))
    return key, name


def result_objects(moto: MotoServer, bucket: str, job_id: str) -> list[str]:
    """Every S3 object of a job id, whatever key name it is under."""
    contents = moto.client("s3").list_objects_v2(Bucket=bucket, Prefix="jobs/").get("Contents", [])
    return sorted(o["Key"] for o in contents if f"/{job_id}/" in o["Key"])


def count_rows(conn: psycopg.Connection, table: str) -> int:
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def metric_value(text: str, name: str, **labels: str) -> float:
    """One sample's value from a Prometheus exposition (0 when absent)."""
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return 0.0


def start_worker(
    postgres: PostgresServer, moto: MotoServer, aws: AwsResources, api_key: str, root: Path, **overrides: str
) -> ServiceProcess:
    """A worker process; it is up once its metrics endpoint answers."""
    overrides = {"PYNOMALY_WORKER_METRICS_PORT": str(free_port()), **overrides}
    env = service_env(postgres, "redis://127.0.0.1:1/0", moto, aws, api_key, **overrides)
    worker = ServiceProcess("service.worker", env, root)
    worker.start(wait_for=None)
    wait_until(lambda: worker._alive() and httpx.get(worker_metrics_url(worker)).status_code == 200, 60, "worker")
    return worker


def worker_metrics_url(worker: ServiceProcess) -> str:
    return f"http://127.0.0.1:{worker.env['PYNOMALY_WORKER_METRICS_PORT']}/metrics"


def queue_depth(moto: MotoServer, queue_url: str) -> int:
    """Messages in the queue, visible or in flight."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = moto.client("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
    return sum(int(attributes[n]) for n in names)
