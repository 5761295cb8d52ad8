"""Schema migrations, applied at start-up by every API and worker instance.

Several instances start at once, so the whole upgrade runs in one transaction
holding a PostgreSQL advisory lock: the first instance applies what is missing,
the others wait for it and then find nothing to do. DDL is transactional in
PostgreSQL, so a failed start leaves no half-applied migration.
"""

from __future__ import annotations

import logging
import threading

import psycopg
from psycopg_pool import ConnectionPool

from service import db
from service.auth import hash_key

log = logging.getLogger(__name__)

# Arbitrary, fixed 64-bit key for pg_advisory_xact_lock: "pynomaly" in ASCII.
LOCK_KEY = int.from_bytes(b"pynomaly", "big") & 0x7FFF_FFFF_FFFF_FFFF

# (version, statements). Append only: never edit a migration that has shipped.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE api_keys (
            key_hash    text PRIMARY KEY,
            name        text NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            revoked_at  timestamptz
        );
        CREATE TABLE detections (
            id            uuid PRIMARY KEY,
            key_name      text NOT NULL,
            input_hash    text NOT NULL,
            n_points      integer NOT NULL,
            n_features    integer NOT NULL,
            options       jsonb NOT NULL,
            input         jsonb NOT NULL,
            scores        jsonb NOT NULL,
            flags         jsonb NOT NULL,
            n_flagged     integer NOT NULL,
            cached        boolean NOT NULL,
            inference_ms  double precision NOT NULL,
            total_ms      double precision NOT NULL,
            instance      text NOT NULL,
            created_at    timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX detections_created_at ON detections (created_at);
        CREATE TABLE jobs (
            id             uuid PRIMARY KEY,
            key_name       text NOT NULL,
            status         text NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed')),
            input_hash     text NOT NULL,
            options        jsonb NOT NULL,
            input          jsonb NOT NULL,
            n_points       integer NOT NULL,
            attempts       integer NOT NULL DEFAULT 0,
            lease_until    timestamptz,
            worker         text,
            result_key     text,
            n_flagged      integer,
            error          text,
            submitted_at   timestamptz NOT NULL DEFAULT now(),
            started_at     timestamptz,
            finished_at    timestamptz
        );
        CREATE INDEX jobs_queued ON jobs (submitted_at) WHERE status = 'queued';
        CREATE TABLE readiness_probes (
            instance    text PRIMARY KEY,
            checked_at  timestamptz NOT NULL
        );
        """,
    ),
    (
        2,
        # Jobs namespaced per API key (issue 22): another key's job id is no conflict, so a submission
        # can no longer tell that it exists, nor squat it. Every existing id is unique, so every existing
        # row stays valid under the wider key. The id comes first: a look-up by id alone (queue messages
        # from before, which name no key) uses the same index. Building it scans every job, which the
        # service's statement timeout (5 s by default) would cut short on a large table at every start.
        """
        SET LOCAL statement_timeout = 0;
        ALTER TABLE jobs DROP CONSTRAINT jobs_pkey;
        ALTER TABLE jobs ADD CONSTRAINT jobs_pkey PRIMARY KEY (id, key_name);
        """,
    ),
)


def _apply(conn: psycopg.Connection) -> list[int]:
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    applied = []
    for version, sql in MIGRATIONS:
        if version in done:
            continue
        conn.execute(sql)
        conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
        applied.append(version)
    return applied


def _bootstrap_key(conn: psycopg.Connection, key: str) -> None:
    conn.execute(
        "INSERT INTO api_keys (key_hash, name) VALUES (%s, 'bootstrap') ON CONFLICT (key_hash) DO NOTHING",
        (hash_key(key),),
    )


def upgrade(pool: ConnectionPool, bootstrap_api_key: str | None = None) -> list[int]:
    """Apply missing migrations and upsert the bootstrap key; return the versions applied here."""

    def work(conn: psycopg.Connection) -> list[int]:
        applied = _apply(conn)
        if bootstrap_api_key:
            _bootstrap_key(conn, bootstrap_api_key)
        return applied

    return db.run(pool, work, idempotent=True)


class Schema:
    """Brings the schema up to date in the background, so a process starts (and answers
    /health) even while PostgreSQL is still down; /ready and the API wait for ``ready``."""

    def __init__(self, pool: ConnectionPool, bootstrap_api_key: str | None) -> None:
        self._pool = pool
        self._key = bootstrap_api_key
        self.ready = threading.Event()
        self.last_error = "not yet migrated"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="schema-migrations", daemon=True)

    def start(self) -> Schema:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        delay = 0.2
        while not self._stop.is_set():
            try:
                applied = upgrade(self._pool, self._key)
            except Exception as exc:  # keep trying: the database may come up later
                self.last_error = str(exc)
                log.warning("schema migration failed, retrying in %.1fs: %s", delay, exc)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            log.info("schema up to date (applied here: %s)", applied or "none")
            self.ready.set()
            return

    def wait(self, timeout_s: float) -> bool:
        return self.ready.wait(timeout_s)
