"""API keys: ``Authorization: Bearer <key>`` checked against SHA-256 hashes in PostgreSQL.

Keys are random and high-entropy, so a plain SHA-256 is enough to store them: no
salt or slow hash is needed against guessing. Every check is counted, and every
refusal too, for the auth-failure-rate alarm. A key found valid is remembered for
``PYNOMALY_AUTH_CACHE_S`` seconds, so most requests skip a database round trip;
revoking a key therefore takes effect within that time. A refused key is refused from
memory for ``abuse.refused_key_cache_s`` (baselines.yaml), so a client guessing keys
costs no database look-up per guess; a key created meanwhile works after that time.
Both memories are bounded: a flood of random keys cannot grow them past ``REMEMBERED``.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

from psycopg_pool import ConnectionPool

from service import db, metrics
from service.errors import ApiError

_SCHEME = "bearer"
REMEMBERED = 10_000  # keys remembered per memory; when full, it is emptied (the database answers meanwhile)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _refuse(message: str) -> ApiError:
    metrics.AUTH_FAILURES.inc()
    return ApiError(401, "unauthorized", message, field="Authorization", hint="send 'Authorization: Bearer <api key>'")


class Authenticator:
    def __init__(self, pool: ConnectionPool, cache_s: float, refused_cache_s: float = 0.0) -> None:
        self._pool = pool
        self._cache_s = cache_s
        self._refused_cache_s = refused_cache_s
        self._valid: dict[str, tuple[str, float]] = {}  # key hash -> (key name, valid until)
        self._refused: dict[str, float] = {}  # key hash -> refused until
        self._lock = threading.Lock()

    def cached(self, authorization: str | None) -> str | None:
        """The key's name if it was found valid recently (counted as a checked request); else None."""
        digest = _digest(authorization)
        with self._lock:
            name, until = self._valid.get(digest or "", ("", 0.0))
        if name and time.monotonic() < until:
            metrics.AUTH_REQUESTS.inc()
            return name
        return None

    def check(self, authorization: str | None) -> str:
        """Return the key's name, or raise 401. A database outage is a 503, not a failed login."""
        metrics.AUTH_REQUESTS.inc()
        digest = _digest(authorization)
        if digest is None:
            raise _refuse("missing or malformed Authorization header")
        if self._recently_refused(digest):
            raise _refuse("unknown or revoked API key")
        row = db.run(
            self._pool,
            lambda conn: conn.execute(
                "SELECT name FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL", (digest,)
            ).fetchone(),
            idempotent=True,
        )
        if row is None:
            _remember(self._refused, digest, time.monotonic() + self._refused_cache_s, self._lock)
            raise _refuse("unknown or revoked API key")
        _remember(self._valid, digest, (row[0], time.monotonic() + self._cache_s), self._lock)
        return row[0]

    def _recently_refused(self, digest: str) -> bool:
        with self._lock:
            return time.monotonic() < self._refused.get(digest, 0.0)


def _remember(memory: dict[str, Any], digest: str, value: Any, lock: threading.Lock) -> None:
    with lock:
        if len(memory) >= REMEMBERED:
            memory.clear()
        memory[digest] = value


def _digest(authorization: str | None) -> str | None:
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != _SCHEME or not key.strip():
        return None
    return hash_key(key.strip())
