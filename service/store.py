"""The service's rows in PostgreSQL: detections and jobs.

Every write is keyed by an id the service chose before writing, and inserts use
ON CONFLICT DO NOTHING, so repeating a write after a lost connection is safe:
that is what makes these writes retryable during a failover. Jobs are namespaced
per API key (:class:`JobRef`): a job id names a job only together with its key.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from service import db


@dataclass(frozen=True)
class Detection:
    id: uuid.UUID
    key_name: str
    input_hash: str
    data: list  # the series, or the rows, as sent
    n_features: int
    options: dict[str, Any]
    result: dict[str, Any]
    scores_json: str  # result["scores"] and ["flags"], already encoded
    flags_json: str
    cached: bool
    total_ms: float
    instance: str


def save_detection(pool: ConnectionPool, d: Detection) -> None:
    """Request, result and timing in one row, one transaction: all of it is stored or none."""
    params = (
        d.id, d.key_name, d.input_hash, len(d.data), d.n_features, Jsonb(d.options), Jsonb(d.data),
        d.scores_json, d.flags_json, d.result["n_flagged"], d.cached,
        d.result["inference_ms"], d.total_ms, d.instance,
    )  # fmt: skip
    db.run(
        pool,
        lambda conn: conn.execute(
            "INSERT INTO detections (id, key_name, input_hash, n_points, n_features, options, input, scores, flags,"
            " n_flagged, cached, inference_ms, total_ms, instance)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s, %s, %s)"
            " ON CONFLICT (id) DO NOTHING",
            params,
        ),
        idempotent=True,
    )


@dataclass(frozen=True)
class JobRef:
    """A job's identity: its id within its API key's namespace. Clients choose ids, so two keys may pick
    the same one; every job query names both, so a key can neither see, block nor touch another's job."""

    key_name: str
    id: uuid.UUID

    @property
    def params(self) -> tuple[uuid.UUID, str]:
        """The values of ``THIS_JOB``."""
        return self.id, self.key_name


THIS_JOB = "id = %s AND key_name = %s"
JOB_COLUMNS = (
    "id, key_name, status, input_hash, n_points, attempts, result_key, n_flagged, error,"
    " submitted_at, started_at, finished_at"
)


def create_job(
    pool: ConnectionPool, job: JobRef, input_hash: str, data: list, options: dict
) -> tuple[dict[str, Any], bool]:
    """Insert the job unless this key has a job of that id; return the stored job and whether this call
    created it. Another key's job of the same id is no conflict: it is another job."""

    def work(conn: psycopg.Connection) -> tuple[dict[str, Any], bool]:
        cur = conn.cursor(row_factory=dict_row)
        created = cur.execute(
            "INSERT INTO jobs (id, key_name, status, input_hash, options, input, n_points)"
            " VALUES (%s, %s, 'queued', %s, %s, %s, %s) ON CONFLICT (id, key_name) DO NOTHING RETURNING id",
            (*job.params, input_hash, Jsonb(options), Jsonb(data), len(data)),
        ).fetchone()
        row = cur.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE {THIS_JOB}", job.params).fetchone()
        if row is None:  # only if a concurrent submission of this id undid its own failed job in between
            raise RuntimeError(f"job {job.id} was deleted while being submitted; submit it again")
        return row, created is not None

    return db.run(pool, work, idempotent=True)


def get_job(pool: ConnectionPool, job: JobRef) -> dict[str, Any] | None:
    def work(conn: psycopg.Connection) -> dict[str, Any] | None:
        cur = conn.cursor(row_factory=dict_row)
        return cur.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE {THIS_JOB}", job.params).fetchone()

    return db.run(pool, work, idempotent=True)


def delete_queued_job(pool: ConnectionPool, job: JobRef) -> None:
    """Undo a submission whose message could not be sent, so no job waits for a message that never comes."""
    db.run(
        pool,
        lambda conn: conn.execute(
            f"DELETE FROM jobs WHERE {THIS_JOB} AND status = 'queued' AND attempts = 0", job.params
        ),
        idempotent=True,
    )


def claim_job(pool: ConnectionPool, job: JobRef, worker: str, lease_s: float) -> dict[str, Any] | None:
    """Take a queued job, or a running one whose worker's lease ran out; None if it is done or held.

    The lease matches the queue's visibility timeout: a message redelivered while
    another worker still holds the job finds it held and leaves it alone.
    """

    def work(conn: psycopg.Connection) -> dict[str, Any] | None:
        cur = conn.cursor(row_factory=dict_row)
        return cur.execute(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, worker = %s, started_at = now(),"
            " lease_until = now() + make_interval(secs => %s)"
            f" WHERE {THIS_JOB} AND (status = 'queued' OR (status = 'running' AND lease_until < now()))"
            " RETURNING id, options, input, extract(epoch FROM submitted_at) AS submitted_at",
            (worker, lease_s, *job.params),
        ).fetchone()

    # Not retried: after a lost connection the claim may have committed, and a retry would
    # then find the job held by ourselves. The message is simply redelivered later.
    return db.run(pool, work, idempotent=False)


def renew_lease(pool: ConnectionPool, job: JobRef, worker: str, lease_s: float) -> bool:
    """Extend our claim while the job runs (with the message's visibility): a duplicate delivery of the
    message, which standard SQS queues allow, then still finds the job held. False if it is no longer ours."""

    def work(conn: psycopg.Connection) -> bool:
        row = conn.execute(
            "UPDATE jobs SET lease_until = now() + make_interval(secs => %s)"
            f" WHERE {THIS_JOB} AND status = 'running' AND worker = %s RETURNING id",
            (lease_s, *job.params, worker),
        ).fetchone()
        return row is not None

    return db.run(pool, work, idempotent=True)


def finish_job(pool: ConnectionPool, job: JobRef, worker: str, result_key: str, n_flagged: int) -> bool:
    """Mark our running job completed; idempotent (a repeat finds it completed and changes nothing)."""

    def work(conn: psycopg.Connection) -> bool:
        row = conn.execute(
            "UPDATE jobs SET status = 'completed', result_key = %s, n_flagged = %s, finished_at = now(),"
            f" lease_until = NULL, error = NULL WHERE {THIS_JOB} AND status = 'running' AND worker = %s RETURNING id",
            (result_key, n_flagged, *job.params, worker),
        ).fetchone()
        return row is not None

    return db.run(pool, work, idempotent=True)


def release_job(pool: ConnectionPool, job: JobRef, worker: str, error: str | None, final: bool) -> None:
    """Give our claim back: 'queued' for a retry, or 'failed' when the queue will not redeliver."""
    db.run(
        pool,
        lambda conn: conn.execute(
            "UPDATE jobs SET status = %s, error = %s, lease_until = NULL,"
            f" finished_at = CASE WHEN %s THEN now() END WHERE {THIS_JOB} AND status = 'running' AND worker = %s",
            ("failed" if final else "queued", error, final, *job.params, worker),
        ),
        idempotent=True,
    )


def job_exists(pool: ConnectionPool, job: JobRef) -> str | None:
    """The job's status, or None if this key has no job of that id."""
    row = db.run(
        pool,
        lambda conn: conn.execute(f"SELECT status FROM jobs WHERE {THIS_JOB}", job.params).fetchone(),
        idempotent=True,
    )
    return None if row is None else row[0]


def job_owners(pool: ConnectionPool, job_id: uuid.UUID) -> list[str]:
    """Up to two keys that have a job of this id (enough to tell none, one or several): only for queue
    messages sent before jobs were per key, which name no key. The primary key starts with the id."""
    rows = db.run(
        pool,
        lambda conn: conn.execute("SELECT key_name FROM jobs WHERE id = %s LIMIT 2", (job_id,)).fetchall(),
        idempotent=True,
    )
    return [row[0] for row in rows]


def probe_primary(pool: ConnectionPool, timeout_s: float) -> None:
    """Readiness: the pool reaches the writable primary in time (raises if not). Writes nothing: a
    demoted primary or a hot standby answers pg_is_in_recovery() true."""
    with pool.connection(timeout=timeout_s) as conn:
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    if row is None or row[0]:
        raise RuntimeError("the database answers read-only (a standby, not the primary)")
