"""Abuse by a caller with or without a key, against the real service process: bodies of death, chunked
uploads over the limit, unauthenticated bodies, guessed keys, the shared cache, the internal pages."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_testkit import ServiceProcess, count_rows, service_env, wait_until

from pynomaly_ops.baselines import load
from service import auth
from service.schemas import MAX_LISTED

pytestmark = pytest.mark.integration
MIB = 1024 * 1024
LIMIT = 4 * MIB  # this module's service: a small body limit, so the over-limit uploads stay small


@pytest.fixture(scope="module")
def small_api(postgres, redis_server, moto, aws, api_key, tmp_path_factory) -> Iterator[ServiceProcess]:
    env = service_env(postgres, redis_server.url, moto, aws, api_key, PYNOMALY_MAX_BODY_BYTES=str(LIMIT))
    proc = ServiceProcess("service.api", env, tmp_path_factory.mktemp("hostile")).start(wait_for="/health")
    wait_until(lambda: httpx.get(proc.base_url + "/ready").status_code == 200, 60, f"ready\n{proc.tail()}")
    yield proc
    proc.stop()


def rss_mb(proc: ServiceProcess) -> float:
    """The API process's resident memory, children excluded (the process pools' children are their own)."""
    status = Path(f"/proc/{proc.proc.pid}/status").read_text()  # type: ignore[union-attr]
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024


def empty_objects(size: int) -> bytes:
    """``{"series":[{},{},...]}`` of about ``size`` bytes: every item wrong."""
    return b'{"series":[' + b",".join([b"{}"] * (size // 3)) + b"]}"


class HealthWatch:
    """Polls /health every 50 ms in a thread; records the slowest answer and every failure."""

    def __init__(self, url: str) -> None:
        self.url, self.slowest_s, self.failures = url + "/health", 0.0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=1.0) as c:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    status = c.get(self.url).status_code
                    if status != 200:
                        self.failures.append(status)
                except httpx.HTTPError as exc:
                    self.failures.append(type(exc).__name__)
                self.slowest_s = max(self.slowest_s, time.perf_counter() - started)
                time.sleep(0.05)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def test_three_concurrent_bodies_of_death_leave_health_answering_and_memory_flat(small_api, api_key):
    body = empty_objects(2 * MIB)
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    before = rss_mb(small_api)
    replies: list[httpx.Response] = []

    def send() -> None:
        with httpx.Client(timeout=30) as c:
            replies.append(c.post(small_api.base_url + "/api/v1/detect", content=body, headers=headers))

    started = time.perf_counter()
    with HealthWatch(small_api.base_url) as health:
        senders = [threading.Thread(target=send) for _ in range(3)]
        for t in senders:
            t.start()
        for t in senders:
            t.join()
    took = time.perf_counter() - started
    grown = rss_mb(small_api) - before
    print(
        f"\nthree 2 MiB bodies of death: {took:.2f}s,"
        f" /health slowest {health.slowest_s * 1000:.0f} ms, RSS +{grown:.0f} MB"
    )
    assert [r.status_code for r in replies] == [422] * 3, replies[0].text
    error = replies[0].json()["error"]
    assert error["field"] == "series[0]" and len(error["details"]) <= MAX_LISTED
    assert health.failures == [] and health.slowest_s < 0.5, (health.failures, health.slowest_s)
    assert took < 5, took  # was 8-9 s for one such body
    assert grown < 100, (before, grown)  # was +750 MB


def test_a_body_of_unknown_fields_costs_one_error(small_api, api_key):
    body = b"{" + b",".join(b'"k%d":0' % i for i in range(200_000)) + b"}"
    reply = httpx.post(
        small_api.base_url + "/api/v1/detect", content=body, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
    )
    assert reply.status_code == 422
    error = reply.json()["error"]
    assert error["field"] == "k0" and "not a known field" in error["message"]
    assert len(error["details"]) == MAX_LISTED


def test_a_chunked_body_over_the_limit_gets_413(small_api, api_key):
    def chunks() -> Iterator[bytes]:
        yield b'{"series":['
        for _ in range(LIMIT // (64 * 1024) + 2):
            yield b"1," * (32 * 1024)
        yield b"1]}"

    reply = httpx.post(
        small_api.base_url + "/api/v1/detect",
        content=chunks(),  # a generator: httpx sends Transfer-Encoding: chunked, no Content-Length
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=30,
    )
    assert reply.status_code == 413, reply.text
    assert reply.json()["error"]["code"] == "too_large" and "PYNOMALY_MAX_BODY_BYTES" in reply.text


def test_a_series_over_the_schema_bound_is_413_not_a_million_errors(small_api, api_key):
    body = b'{"series":[' + b",".join([b"1"] * 1_000_001) + b"]}"
    reply = httpx.post(
        small_api.base_url + "/api/v1/detect", content=body, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
    )
    assert reply.status_code == 413 and reply.json()["error"]["field"] == "series", reply.text


def raw_request(url: str, head: str, first_chunk: bytes) -> tuple[bytes, float]:
    """Send a chunked request's head and one chunk, then wait for the answer without sending more."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head.encode() + b"Transfer-Encoding: chunked\r\n\r\n")
        s.sendall(b"%x\r\n%s\r\n" % (len(first_chunk), first_chunk))
        started = time.perf_counter()
        reply = s.recv(65536)
        return reply, time.perf_counter() - started


def test_an_unauthenticated_body_gets_401_without_being_read(small_api, db):
    before = count_rows(db, "detections")
    head = "POST /api/v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    # The body never ends: the 401 can only come before it is read.
    reply, waited = raw_request(small_api.base_url, head, b'{"series":[' + b"1," * 10_000)
    assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
    assert waited < 2
    assert count_rows(db, "detections") == before


def test_invalid_json_without_a_key_is_401_not_400(small_api):
    reply = httpx.post(small_api.base_url + "/api/v1/detect", content=b'{"series": [1, 2')
    assert reply.status_code == 401


def test_a_refused_key_is_refused_from_memory_for_a_while(small_api, db):
    """A guessed key costs no database look-up: refused once, it stays refused from memory for
    abuse.refused_key_cache_s, even once it exists, and works after that."""
    window = load().abuse.refused_key_cache_s
    key = "late-" + uuid.uuid4().hex
    with httpx.Client(base_url=small_api.base_url, headers={"Authorization": f"Bearer {key}"}) as c:
        assert c.post("/api/v1/detect", json={"series": [1, 2, 3]}).status_code == 401
        refused_at = time.monotonic()
        db.execute("INSERT INTO api_keys (key_hash, name) VALUES (%s, 'late')", (auth.hash_key(key),))
        assert c.post("/api/v1/detect", json={"series": [1, 2, 3]}).status_code == 401
        assert time.monotonic() - refused_at < window  # the second refusal came from memory
        wait_until(lambda: c.post("/api/v1/detect", json={"series": [1, 2, 3]}).status_code == 200, window + 5,
                   "the new key to work once the refusal is forgotten", interval_s=0.5)  # fmt: skip
        assert time.monotonic() - refused_at >= window * 0.9


def test_the_cache_is_per_key(small_api, api_key, db):
    other = "other-" + uuid.uuid4().hex
    db.execute("INSERT INTO api_keys (key_hash, name) VALUES (%s, 'other')", (auth.hash_key(other),))
    series = {"series": [float(i % 7) for i in range(200)] + [99.0, float(uuid.uuid4().int % 1000)]}
    ours = httpx.post(
        small_api.base_url + "/api/v1/detect", json=series, headers={"Authorization": f"Bearer {api_key}"}
    )
    again = httpx.post(
        small_api.base_url + "/api/v1/detect", json=series, headers={"Authorization": f"Bearer {api_key}"}
    )
    theirs = httpx.post(
        small_api.base_url + "/api/v1/detect", json=series, headers={"Authorization": f"Bearer {other}"}
    )
    assert (ours.json()["cached"], again.json()["cached"], theirs.json()["cached"]) == (False, True, False)
    assert theirs.json()["scores"] == ours.json()["scores"]


def test_docs_pages_are_off_and_ready_is_terse_and_writes_nothing(small_api, db):
    for page in ("/docs", "/redoc"):
        assert httpx.get(small_api.base_url + page).status_code == 404
    assert httpx.get(small_api.base_url + "/openapi.json").status_code == 200  # the instance port's, for clients
    before = count_rows(db, "readiness_probes")
    for _ in range(3):
        ready = httpx.get(small_api.base_url + "/ready").json()
    assert ready["checks"] == {"database": "ok", "queue": "ok", "cache": "ok"}
    assert count_rows(db, "readiness_probes") == before
