"""Attacks through the local stack's load balancer, as a caller with or without a key would make them:
bodies of death, uploads over the limit, unauthenticated bodies, guessed keys, floods, slow clients,
internal pages. Bounded, loopback only; the floods come from their own loopback addresses so the
rest of the session's traffic (127.0.0.1) is not rate-limited by them."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import RunningStack, api, instances_ready

from local import probes
from local.render import abuse_limits
from local.waiting import wait_for

pytestmark = pytest.mark.integration
MIB = 1024 * 1024


@pytest.fixture(autouse=True, scope="module")
def every_instance_ready(running: RunningStack) -> None:
    """`up` waits for /health; an instance may still be migrating its schema (/ready 503, /api/ 503)."""
    wait_for("every instance ready", lambda: all(r["status"] == "ready" for r in instances_ready(running)), 60)


def lb_address(running: RunningStack) -> tuple[str, int]:
    parts = urlsplit(running.outputs.load_balancer_url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def client_from(running: RunningStack, source: str, key: str | None = None) -> httpx.Client:
    """A client whose connections come from ``source`` (another loopback address): its own rate-limit entry."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=running.outputs.load_balancer_url, headers=headers, transport=transport, timeout=30)


class Watch:
    """Polls /health through the load balancer and the instances' states in HAProxy every 100 ms."""

    def __init__(self, running: RunningStack) -> None:
        self.running, self.failures, self.states = running, [], set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.running.outputs.load_balancer_url, timeout=2) as c:
            while not self._stop.is_set():
                try:
                    status = c.get("/health").status_code
                    if status != 200:
                        self.failures.append(status)
                except httpx.HTTPError as exc:
                    self.failures.append(type(exc).__name__)
                self.states |= {s.split(" ", 1)[0] for s in probes.instance_status(self.running.state).values()}
                time.sleep(0.1)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def test_three_concurrent_bodies_of_death_leave_every_instance_up(running: RunningStack):
    body = b'{"series":[' + b",".join([b"{}"] * (2 * MIB // 3)) + b"]}"
    statuses: list[int] = []

    def send() -> None:
        with api(running) as client:
            statuses.append(client.post("/api/v1/detect", content=body, timeout=30).status_code)

    with Watch(running) as watch:
        senders = [threading.Thread(target=send) for _ in range(3)]
        for t in senders:
            t.start()
        for t in senders:
            t.join()
        time.sleep(2)  # two more health checks of every instance after the last answer
    assert statuses == [422] * 3
    assert watch.failures == [], watch.failures  # was: 37 x 503, every instance out for 17 s
    assert watch.states == {"UP"}, watch.states


def test_a_declared_body_over_the_limit_is_refused_by_the_load_balancer(running: RunningStack):
    limit = abuse_limits()["max_body_bytes"]
    host, port = lb_address(running)
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(f"POST /api/v1/detect HTTP/1.1\r\nHost: x\r\nContent-Length: {limit + 1}\r\n\r\n".encode())
        reply = s.recv(4096)  # no byte of the body was sent: the answer comes from the load balancer
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"too_large" in reply


def test_a_chunked_body_over_the_limit_gets_413(running: RunningStack):
    limit = abuse_limits()["max_body_bytes"]
    piece = b"1," * (128 * 1024)

    def chunks() -> Iterator[bytes]:
        yield b'{"series":['
        for _ in range(limit // len(piece) + 2):
            yield piece
        yield b"1]}"

    with api(running) as client:
        reply = client.post("/api/v1/detect", content=chunks(), timeout=60)  # chunked: no Content-Length
    assert reply.status_code == 413, reply.text[:300]  # was 200 for 20 MiB


def test_an_unauthenticated_body_gets_401_without_being_read(running: RunningStack):
    host, port = lb_address(running)
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"POST /api/v1/detect HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b'{"series":[' + b"1," * 20_000
        s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        started = time.perf_counter()
        reply = s.recv(4096)  # the body never ends: a 401 can only come before it is read
    assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
    assert time.perf_counter() - started < 2


def test_internal_pages_are_not_served_through_the_load_balancer(running: RunningStack):
    with api(running) as client:
        for path in ("/metrics", "/ready", "/openapi.json", "/docs", "/redoc"):
            reply = client.get(path)
            assert reply.status_code == 404 and reply.json()["error"]["code"] == "not_found", path
        assert client.get("/health").status_code == 200
    instance = next(p for p in running.stack.programs() if p.group)
    assert httpx.get(f"http://{instance.address}:{instance.port}/metrics").status_code == 200  # Prometheus's port


def test_guessing_keys_gets_429_with_retry_after(running: RunningStack):
    limits = abuse_limits()
    with client_from(running, "127.0.0.21") as guesser:
        statuses = [
            guesser.post("/api/v1/detect", json={"series": [1]}, headers={"Authorization": f"Bearer {uuid.uuid4()}"})
            for _ in range(limits["auth_failures_per_window"] + 5)
        ]
    codes = [r.status_code for r in statuses]
    assert codes[: limits["auth_failures_per_window"]] == [401] * limits["auth_failures_per_window"]
    assert set(codes[limits["auth_failures_per_window"] :]) == {429}, codes
    assert statuses[-1].headers["retry-after"] == str(limits["retry_after_s"])
    with api(running) as client:  # other clients are untouched
        assert client.post("/api/v1/detect", json={"series": [1.0, 2.0, 3.0]}).status_code == 200


def test_a_flood_from_one_address_gets_429(running: RunningStack):
    """Over requests_per_window from one address: 429. The flood is of requests the load balancer refuses
    itself (a declared body over the limit), so it costs the instances nothing."""
    limits = abuse_limits()
    host, port = lb_address(running)
    head = f"POST /api/v1/detect HTTP/1.1\r\nHost: x\r\nContent-Length: {limits['max_body_bytes'] + 1}\r\n\r\n"
    statuses = []
    for _ in range(limits["requests_per_window"] + 10):
        with socket.create_connection((host, port), timeout=5, source_address=("127.0.0.22", 0)) as s:
            s.sendall(head.encode())
            statuses.append(s.recv(64)[9:12])
    assert statuses[: limits["requests_per_window"]] == [b"413"] * limits["requests_per_window"]
    assert set(statuses[limits["requests_per_window"] :]) == {b"429"}


def test_a_slow_client_is_dropped(running: RunningStack):
    host, port = lb_address(running)
    with socket.create_connection((host, port), timeout=20) as s:
        s.sendall(b"GET /health HTTP/1.1\r\n")  # the head never ends
        started = time.monotonic()
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 408") or reply == b"", reply[:100]
    assert 9 <= time.monotonic() - started < 15  # timeout http-request
