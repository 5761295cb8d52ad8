"""The cache costs one attempt per request when Redis hangs: no client-side retries behind its back."""

from __future__ import annotations

import socket
import threading

import pytest

from pynomaly_ops.environment import ENV_NAMES
from service.cache import ResultCache
from service.config import load_settings


class HungServer:
    """Accepts TCP connections and never answers, as a frozen Redis primary does (SIGSTOP: the kernel still
    completes the handshake). Counts the connections it was asked for."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def hung():
    server = HungServer()
    yield server
    server.close()


def _cache(env: dict[str, str]) -> ResultCache:
    return ResultCache(load_settings({ENV_NAMES["redis_timeout_s"]: "0.2", **env}))


def test_a_hung_redis_costs_one_attempt_then_the_cache_is_skipped(hung):
    cache = _cache({ENV_NAMES["redis_url"]: f"redis://127.0.0.1:{hung.port}/0"})
    assert cache.get("key", "some-hash") is None  # a miss, never an error to the caller
    assert len(hung.accepted) == 1, f"{len(hung.accepted)} connections: the command was retried"
    cache.put("key", "some-hash", {"scores": []})  # within the skip window: Redis is not asked again
    assert cache.get("key", "some-hash") is None
    assert len(hung.accepted) == 1


def test_through_sentinel_too(hung):
    """The Sentinel client (production's and the local stack's) asks the hung Sentinel once, not ten times."""
    cache = _cache({ENV_NAMES["redis_sentinels"]: f"127.0.0.1:{hung.port}"})
    assert cache.get("key", "some-hash") is None
    assert len(hung.accepted) == 1, f"{len(hung.accepted)} connections: the command was retried"
