"""Detection results cached in Redis by API key and input hash; the cache is an optimisation, never a
dependency. Each key has its own entries, so a caller never learns (from ``"cached": true``) that another
key sent the same data.

With ``PYNOMALY_REDIS_SENTINELS`` set the client asks Sentinel for the current
master, so a Redis failover is followed. Any Redis error is counted and swallowed;
after one, the cache is skipped for ``PYNOMALY_REDIS_RETRY_AFTER_S`` so an outage
does not add a timeout to every request. With ``PYNOMALY_REDIS_PASSWORD_FILE`` the
AUTH password is read from that file on every new connection, so a rotated password
is picked up; a ``rediss://`` URL connects with TLS (redis-py verifies the server).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.credentials import CredentialProvider
from redis.retry import Retry
from redis.sentinel import Sentinel

from pynomaly_ops.environment import ENV_NAMES
from service import metrics
from service.config import Settings, read_password_file

log = logging.getLogger(__name__)
KEY_PREFIX = "pynomaly:detect:"


class PasswordFile(CredentialProvider):
    """The AUTH password from a file, read for each new connection (redis-py asks on connect)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def get_credentials(self) -> tuple[str]:
        try:
            return (read_password_file(self.path),)
        except (OSError, ValueError) as exc:
            # A RedisError: the connection is dropped and the cache treats it as Redis unavailable.
            raise redis.ConnectionError(f"{ENV_NAMES['redis_password_file']}={self.path!r}: {exc}") from exc


def _auth(settings: Settings) -> dict[str, Any]:
    if settings.redis_password_file:
        return {"credential_provider": PasswordFile(settings.redis_password_file)}
    return {"password": settings.redis_password}


def _client(settings: Settings) -> redis.Redis:
    # One attempt per command: redis-py retries a timed-out command 10 times by default (up to 1 s of
    # backoff each), so a hung primary held a request for seconds, past its client's timeout, where the
    # cache must cost at most redis_timeout_s and then be skipped for redis_retry_after_s.
    timeouts: dict[str, Any] = {
        "socket_timeout": settings.redis_timeout_s,
        "socket_connect_timeout": settings.redis_timeout_s,
        "retry": Retry(NoBackoff(), 0),
    }
    if settings.redis_sentinels:
        sentinel = Sentinel(
            list(settings.redis_sentinels),
            # The Sentinels ask AUTH too (the local stack's do): the same password as the nodes', from the file too
            sentinel_kwargs={**timeouts, **_auth(settings)},
            **_auth(settings),
            **timeouts,
        )
        return sentinel.master_for(settings.redis_sentinel_master, **timeouts)
    return redis.Redis.from_url(settings.redis_url, **_auth(settings), **timeouts)


def _entry(key_name: str, input_hash: str) -> str:
    return f"{KEY_PREFIX}{key_name}:{input_hash}"


class ResultCache:
    def __init__(self, settings: Settings) -> None:
        self._redis = _client(settings)
        self._ttl = settings.cache_ttl_s
        self._retry_after = settings.redis_retry_after_s
        self._skip_until = 0.0
        self._lock = threading.Lock()

    def _available(self) -> bool:
        return time.monotonic() >= self._skip_until

    def _failed(self, exc: Exception) -> None:
        metrics.CACHE_REQUESTS.labels(result="error").inc()
        with self._lock:
            self._skip_until = time.monotonic() + self._retry_after
        log.warning("cache unavailable, skipping it for %.1fs: %s", self._retry_after, exc)

    def get(self, key_name: str, input_hash: str) -> dict[str, Any] | None:
        if not self._available():
            metrics.CACHE_REQUESTS.labels(result="error").inc()
            return None
        try:
            raw = self._redis.get(_entry(key_name, input_hash))
            result = None if raw is None else json.loads(raw)
        except (redis.RedisError, OSError, ValueError) as exc:  # ValueError: a corrupt entry is a miss, not a 500
            self._failed(exc)
            return None
        metrics.CACHE_REQUESTS.labels(result="miss" if result is None else "hit").inc()
        return result

    def put(self, key_name: str, input_hash: str, result: dict[str, Any]) -> None:
        if not self._available():
            return
        try:
            self._redis.set(_entry(key_name, input_hash), json.dumps(result), ex=self._ttl)
        except (redis.RedisError, OSError) as exc:
            self._failed(exc)

    def check(self) -> str:
        """Readiness: 'ok' or the error, always asking Redis (not the skip window)."""
        try:
            self._redis.ping()
        except (redis.RedisError, OSError) as exc:
            return f"degraded: {type(exc).__name__}: {exc}"
        return "ok"

    def close(self) -> None:
        self._redis.close()
