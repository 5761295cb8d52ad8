"""PostgreSQL through a psycopg 3 connection pool that follows a failover without a restart.

The conninfo may list several hosts with ``target_session_attrs=read-write``: libpq
then connects to whichever host is the primary. The pool checks each connection
before lending it, so connections broken by a restart or failover are replaced
instead of failing a request. Every statement runs under a bounded statement
timeout; only idempotent work is retried, within a deadline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from service import metrics
from service.config import Settings
from service.errors import DependencyUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

# Errors after which the same idempotent work may succeed on a fresh connection:
# the server went away, or the connection now points at a demoted (read-only) primary.
RETRYABLE = (psycopg.OperationalError, pg_errors.ReadOnlySqlTransaction, PoolTimeout)


def open_pool(settings: Settings) -> ConnectionPool:
    """Create the pool and start filling it in the background; it never blocks start-up."""
    pool = ConnectionPool(
        settings.db_dsn,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        timeout=settings.db_pool_timeout_s,
        kwargs={
            "connect_timeout": max(1, round(settings.db_connect_timeout_s)),
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms}",
            "application_name": f"pynomaly-{settings.instance_id}",
        },
        check=ConnectionPool.check_connection,
        # Give up a failed refill at once: each client waiting for a connection starts a
        # fresh attempt, so recovery after a failover never waits out a long backoff.
        reconnect_timeout=0,
        name=f"pynomaly-{settings.instance_id}",
        open=False,
    )
    pool.open(wait=False)
    _export_pool_gauges(pool)
    return pool


def _export_pool_gauges(pool: ConnectionPool) -> None:
    def stat(compute: Callable[[dict[str, int]], int]) -> Callable[[], float]:
        return lambda: float(compute(pool.get_stats()))

    metrics.DB_POOL.labels(state="in_use").set_function(stat(lambda s: s["pool_size"] - s["pool_available"]))
    metrics.DB_POOL.labels(state="idle").set_function(stat(lambda s: s["pool_available"]))
    metrics.DB_POOL.labels(state="waiting").set_function(stat(lambda s: s.get("requests_waiting", 0)))


def run(
    pool: ConnectionPool, work: Callable[[psycopg.Connection], T], *, idempotent: bool, deadline_s: float | None = None
) -> T:
    """Run ``work`` in one transaction; retry connection failures only when ``idempotent``.

    A non-idempotent write is tried once: if its connection dies mid-commit the outcome
    is unknown, and repeating it could apply it twice. Either way a dependency failure
    surfaces as :class:`DependencyUnavailable` (HTTP 503), never as a 500. Retries stop
    after ``deadline_s`` (default: twice the pool's wait for a connection).
    """
    stop_at = time.monotonic() + (2 * pool.timeout if deadline_s is None else deadline_s)
    delay = 0.05
    while True:
        try:
            with pool.connection() as conn:
                try:
                    with conn.transaction():
                        return work(conn)
                except pg_errors.ReadOnlySqlTransaction:
                    conn.close()  # this host was demoted: the pool must not lend it again
                    raise
        except RETRYABLE as exc:
            if not idempotent or time.monotonic() + delay > stop_at:
                raise DependencyUnavailable("database", _short(exc)) from exc
            log.warning("database error, retrying idempotent work in %.2fs: %s", delay, _short(exc))
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
