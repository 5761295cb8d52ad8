"""What the drills rely on: the service follows a PostgreSQL restart, survives Redis going away,
and shuts down without dropping in-flight requests."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import httpx
import pytest
from servers import ServiceProcess, wait_until
from service_testkit import metric_value, own_redis, service_env

from pynomaly_ops import metrics

pytestmark = pytest.mark.integration


# This module stops its Redis, so it gets its own.
redis_server = pytest.fixture(own_redis, scope="module", name="redis_server")


@pytest.fixture(scope="module")
def api(postgres, redis_server, moto, aws, api_key, tmp_path_factory) -> Iterator[ServiceProcess]:
    env = service_env(
        postgres, redis_server.url, moto, aws, api_key,
        PYNOMALY_DB_POOL_TIMEOUT_S="1", PYNOMALY_REDIS_RETRY_AFTER_S="0.5",
    )  # fmt: skip
    proc = ServiceProcess("service.api", env, tmp_path_factory.mktemp("api-resilience")).start()
    yield proc
    proc.stop()


def detect(client: httpx.Client, seed: int) -> httpx.Response:
    return client.post("/api/v1/detect", json={"series": [float((i * seed) % 17) for i in range(200)]})


def stored(db, reply: httpx.Response) -> bool:
    row = db.execute("SELECT 1 FROM detections WHERE id = %s", (reply.json()["id"],)).fetchone()
    return row is not None


def test_follows_a_postgresql_restart_without_restarting(api, client, postgres, db):
    assert detect(client, 1).status_code == 200  # the pool holds live connections now
    pid_before = api.proc.pid
    postgres.restart()  # every pooled connection is now dead
    reply = detect(client, 2)
    assert reply.status_code == 200, reply.text
    with httpx.Client() as c:
        assert c.get(api.base_url + "/ready").json()["checks"]["database"] == "ok"
    assert api.proc.pid == pid_before and api.running()
    with postgres_connection(postgres) as conn:
        assert stored(conn, reply)


def postgres_connection(postgres):
    import psycopg

    return psycopg.connect(postgres.dsn(), autocommit=True)


def test_database_down_is_a_503_then_recovers(api, client, postgres):
    postgres.stop()
    try:
        down = detect(client, 3)
        assert down.status_code == 503, down.text
        assert down.json()["error"]["dependency"] == "database"
        assert client.get("/health").status_code == 200  # liveness never depends on PostgreSQL
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("failed")
    finally:
        postgres.start()
    reply = wait_until(lambda: (r := detect(client, 4)).status_code == 200 and r, 30, "recovery", interval_s=0.2)
    with postgres_connection(postgres) as conn:
        assert stored(conn, reply)


def test_keeps_answering_with_redis_stopped(api, client, redis_server):
    assert detect(client, 5).status_code == 200
    redis_server.stop()
    try:
        errors_before = metric_value(client.get("/metrics").text, metrics.CACHE_REQUESTS, result="error")
        for seed in (5, 6, 7):  # 5 would have been a cache hit
            reply = detect(client, seed)
            assert reply.status_code == 200 and reply.json()["cached"] is False, reply.text
        ready = client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["status"] == "degraded" and ready.json()["checks"]["cache"].startswith("degraded")
        errors = metric_value(client.get("/metrics").text, metrics.CACHE_REQUESTS, result="error")
        assert errors > errors_before
    finally:
        redis_server.start()
    wait_until(lambda: client.get("/ready").json()["status"] == "ready", 30, "cache back")
    wait_until(lambda: detect(client, 8).json()["cached"], 30, "cache hits again", interval_s=0.2)


def test_health_stays_fast_while_detection_is_busy(api, client):
    """Detection runs off the event loop: liveness answers while heavy requests are in flight."""
    heavy = {"series": [float(i % 101) for i in range(100_000)], "n_estimators": 100}
    threads = [threading.Thread(target=client.post, args=("/api/v1/detect",), kwargs={"json": heavy}) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        in_flight = lambda: metric_value(client.get("/metrics").text, metrics.HTTP_IN_FLIGHT, method="POST") >= 1  # noqa: E731
        wait_until(in_flight, 10, "a detection in flight", interval_s=0.01)
        with httpx.Client(base_url=api.base_url, timeout=0.5) as probe:
            assert probe.get("/health").status_code == 200
    finally:
        for t in threads:
            t.join(60)


def test_sigterm_finishes_in_flight_requests(postgres, redis_server, moto, aws, api_key, tmp_path, db):
    env = service_env(postgres, redis_server.url, moto, aws, api_key)
    proc = ServiceProcess("service.api", env, tmp_path).start()
    heavy = {"series": [float(i % 97) for i in range(100_000)], "n_estimators": 150}
    replies: list[httpx.Response] = []
    with httpx.Client(base_url=proc.base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60) as c:
        sender = threading.Thread(target=lambda: replies.append(c.post("/api/v1/detect", json=heavy)))
        sender.start()
        in_flight = lambda: metric_value(c.get("/metrics").text, metrics.HTTP_IN_FLIGHT, method="POST") >= 1  # noqa: E731
        wait_until(in_flight, 10, "the request in flight", interval_s=0.01)
        proc.signal(signal.SIGTERM)
        sender.join(60)
    assert proc.proc.wait(30) == 0, proc.tail()
    assert replies and replies[0].status_code == 200, replies
    assert stored(db, replies[0])
    with pytest.raises(httpx.ConnectError):
        httpx.get(proc.base_url + "/health", timeout=1)
