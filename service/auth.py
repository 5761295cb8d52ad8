"""API keys: ``Authorization: Bearer <key>`` checked against SHA-256 hashes in PostgreSQL.

Keys are random and high-entropy, so a plain SHA-256 is enough to store them: no
salt or slow hash is needed against guessing. Every check is counted, and every
refusal too, for the auth-failure-rate alarm.
"""

from __future__ import annotations

import hashlib

from psycopg_pool import ConnectionPool

from service import db, metrics
from service.errors import ApiError

_SCHEME = "bearer"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _refuse(message: str) -> ApiError:
    metrics.AUTH_FAILURES.inc()
    return ApiError(401, "unauthorized", message, field="Authorization", hint="send 'Authorization: Bearer <api key>'")


def authenticate(pool: ConnectionPool, authorization: str | None) -> str:
    """Return the key's name, or raise 401. A database outage is a 503, not a failed login."""
    metrics.AUTH_REQUESTS.inc()
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != _SCHEME or not key.strip():
        raise _refuse("missing or malformed Authorization header")
    digest = hash_key(key.strip())
    row = db.run(
        pool,
        lambda conn: conn.execute(
            "SELECT name FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL", (digest,)
        ).fetchone(),
        idempotent=True,
    )
    if row is None:
        raise _refuse("unknown or revoked API key")
    return row[0]
