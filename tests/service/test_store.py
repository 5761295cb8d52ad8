"""The database layer against a real PostgreSQL: concurrent migrations, the per-key jobs migration on a
database with rows, job claims and leases."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from service import migrations, store
from service.store import JobRef

pytestmark = pytest.mark.integration
PER_KEY_JOBS = 2  # the migration that namespaced jobs per API key
OPTIONS = {"method": "residual", "contamination": "auto", "threshold": None}


def fresh_database(postgres) -> str:
    name = f"t_{uuid.uuid4().hex[:10]}"
    postgres.psql(f"CREATE DATABASE {name} OWNER {postgres.user}")
    return postgres.dsn(dbname=name)


def test_three_instances_starting_at_once_migrate_exactly_once(postgres):
    dsn = fresh_database(postgres)
    pools = [ConnectionPool(dsn, min_size=1, max_size=1, timeout=10, open=True) for _ in range(3)]
    applied: list[list[int]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def start(pool: ConnectionPool) -> None:
        barrier.wait()
        try:
            applied.append(migrations.upgrade(pool, bootstrap_api_key="k" * 32))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(p,)) for p in pools]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for p in pools:
        p.close()
    assert errors == []
    every_version = [v for v, _ in migrations.MIGRATIONS]
    assert sorted(applied) == [[], [], every_version]  # one instance did the work, two found it done
    with psycopg.connect(dsn) as conn:
        assert [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")] == every_version
        assert conn.execute("SELECT count(*) FROM api_keys").fetchone() == (1,)


def test_migrations_are_idempotent(pool):
    assert migrations.upgrade(pool) == []


def test_jobs_written_before_per_key_ids_stay_readable_by_their_key(postgres, monkeypatch):
    """A database at the previous schema, with jobs in it, migrated as a new release's first start does."""
    with ConnectionPool(fresh_database(postgres), min_size=1, max_size=2, timeout=10) as pool:
        monkeypatch.setattr(migrations, "MIGRATIONS", [m for m in migrations.MIGRATIONS if m[0] < PER_KEY_JOBS])
        assert migrations.upgrade(pool) == list(range(1, PER_KEY_JOBS))
        old = {JobRef("tenant-a", uuid.uuid4()): "queued", JobRef("tenant-b", uuid.uuid4()): "completed"}
        with pool.connection() as conn:  # as the previous release wrote them (result_key: its S3 layout)
            for job, status in old.items():
                conn.execute(
                    "INSERT INTO jobs (id, key_name, status, input_hash, options, input, n_points, result_key)"
                    " VALUES (%s, %s, %s, 'h', '{}', '[1.0]', 1, %s)",
                    (*job.params, status, f"jobs/{job.id}/result.json"),
                )
        monkeypatch.undo()
        assert migrations.upgrade(pool) == [v for v, _ in migrations.MIGRATIONS if v >= PER_KEY_JOBS]
        for job, status in old.items():
            row = store.get_job(pool, job)
            assert row is not None and (row["status"], row["result_key"]) == (status, f"jobs/{job.id}/result.json")
            assert store.get_job(pool, JobRef("tenant-c", job.id)) is None
            assert store.job_owners(pool, job.id) == [job.key_name]
        queued = next(iter(old))
        _, created = store.create_job(pool, JobRef("tenant-c", queued.id), "other", [2.0], OPTIONS)
        assert created and sorted(store.job_owners(pool, queued.id)) == ["tenant-a", "tenant-c"]
        assert store.claim_job(pool, queued, "w", lease_s=60) is not None  # the old job still runs


def new_job(pool: ConnectionPool, key_name: str = "test") -> JobRef:
    job = JobRef(key_name, uuid.uuid4())
    store.create_job(pool, job, "hash", [[1.0], [2.0]], {"n_estimators": 5, "contamination": "auto"})
    return job


def test_a_claimed_job_cannot_be_claimed_again_until_its_lease_expires(pool):
    job = new_job(pool)
    assert store.claim_job(pool, job, "worker-a", lease_s=60) is not None
    assert store.claim_job(pool, job, "worker-b", lease_s=60) is None  # held: the duplicate waits
    with pool.connection() as conn:
        conn.execute("UPDATE jobs SET lease_until = now() - interval '1 second' WHERE id = %s", (job.id,))
    assert store.claim_job(pool, job, "worker-b", lease_s=60) is not None  # worker-a died: take over
    assert not store.finish_job(pool, job, "worker-a", "key", 0)  # the stale worker cannot finish it
    assert store.finish_job(pool, job, "worker-b", "key", 0)
    assert store.claim_job(pool, job, "worker-c", lease_s=60) is None  # completed: never again
    assert store.get_job(pool, job)["attempts"] == 2


def test_a_released_job_is_claimable_and_a_final_failure_is_not(pool):
    job = new_job(pool)
    store.claim_job(pool, job, "w", lease_s=60)
    store.release_job(pool, job, "w", "boom", final=False)
    assert store.get_job(pool, job)["status"] == "queued"
    store.claim_job(pool, job, "w", lease_s=60)
    store.release_job(pool, job, "w", "boom", final=True)
    row = store.get_job(pool, job)
    assert (row["status"], row["error"]) == ("failed", "boom")
    assert store.claim_job(pool, job, "w", lease_s=60) is None


def test_one_keys_job_is_untouched_by_anything_done_to_another_keys_job_of_the_same_id(pool):
    ours = new_job(pool, "tenant-a")
    theirs = JobRef("tenant-b", ours.id)
    assert store.job_exists(pool, theirs) is None and store.get_job(pool, theirs) is None
    assert store.claim_job(pool, theirs, "w", lease_s=60) is None  # nothing of theirs to claim
    _, created = store.create_job(pool, theirs, "other", [[3.0]], {"n_estimators": 5, "contamination": "auto"})
    assert created
    assert store.claim_job(pool, theirs, "w", lease_s=60) is not None
    assert store.renew_lease(pool, theirs, "w", lease_s=60)
    assert store.finish_job(pool, theirs, "w", "their-key", 0)
    store.delete_queued_job(pool, theirs)  # completed: not deleted, and never ours
    row = store.get_job(pool, ours)
    assert row is not None and (row["status"], row["attempts"], row["input_hash"]) == ("queued", 0, "hash")
    assert store.job_exists(pool, theirs) == "completed"
    store.delete_queued_job(pool, ours)
    assert store.get_job(pool, ours) is None and store.job_exists(pool, theirs) == "completed"
