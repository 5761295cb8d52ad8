"""The database layer against a real PostgreSQL: concurrent migrations, job claims and leases."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from service import migrations, store

pytestmark = pytest.mark.integration


def fresh_database(postgres) -> str:
    name = f"t_{uuid.uuid4().hex[:10]}"
    postgres.psql(f"CREATE DATABASE {name} OWNER {postgres.user}")
    return postgres.dsn(dbname=name)


@pytest.fixture
def pool(postgres) -> Iterator[ConnectionPool]:
    with ConnectionPool(postgres.dsn(), min_size=1, max_size=4, timeout=5) as p:
        migrations.upgrade(p)
        yield p


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


def new_job(pool: ConnectionPool) -> uuid.UUID:
    job_id = uuid.uuid4()
    store.create_job(pool, job_id, "test", "hash", [[1.0], [2.0]], {"n_estimators": 5, "contamination": "auto"})
    return job_id


def test_a_claimed_job_cannot_be_claimed_again_until_its_lease_expires(pool):
    job_id = new_job(pool)
    assert store.claim_job(pool, job_id, "worker-a", lease_s=60) is not None
    assert store.claim_job(pool, job_id, "worker-b", lease_s=60) is None  # held: the duplicate waits
    with pool.connection() as conn:
        conn.execute("UPDATE jobs SET lease_until = now() - interval '1 second' WHERE id = %s", (job_id,))
    assert store.claim_job(pool, job_id, "worker-b", lease_s=60) is not None  # worker-a died: take over
    assert not store.finish_job(pool, job_id, "worker-a", "key", 0)  # the stale worker cannot finish it
    assert store.finish_job(pool, job_id, "worker-b", "key", 0)
    assert store.claim_job(pool, job_id, "worker-c", lease_s=60) is None  # completed: never again
    assert store.get_job(pool, job_id)["attempts"] == 2


def test_a_released_job_is_claimable_and_a_final_failure_is_not(pool):
    job_id = new_job(pool)
    store.claim_job(pool, job_id, "w", lease_s=60)
    store.release_job(pool, job_id, "w", "boom", final=False)
    assert store.get_job(pool, job_id)["status"] == "queued"
    store.claim_job(pool, job_id, "w", lease_s=60)
    store.release_job(pool, job_id, "w", "boom", final=True)
    job = store.get_job(pool, job_id)
    assert (job["status"], job["error"]) == ("failed", "boom")
    assert store.claim_job(pool, job_id, "w", lease_s=60) is None
