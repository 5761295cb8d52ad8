"""Fixtures for the service's tests: real PostgreSQL, Redis and moto servers on free loopback
ports, and the API and worker run as real processes (``python -m service.api``/``service.worker``)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from psycopg_pool import ConnectionPool
from service_testkit import (
    AwsResources,
    MotoServer,
    PostgresServer,
    ServiceProcess,
    add_api_key,
    api_client,
    new_aws,
    own_redis,
    service_env,
    serving,
    wait_until,
)

from service import migrations


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    yield from serving(PostgresServer().init().start().create_app_database())


redis_server = pytest.fixture(own_redis, scope="session", name="redis_server")


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    yield from serving(MotoServer().start())


@pytest.fixture(scope="session")
def api_key() -> str:
    return secrets.token_urlsafe(32)


@pytest.fixture(scope="module")
def aws(moto: MotoServer) -> AwsResources:
    return new_aws(moto)


@pytest.fixture(scope="module")
def api(postgres, redis_server, moto, aws, api_key, tmp_path_factory) -> Iterator[ServiceProcess]:
    env = service_env(postgres, redis_server.url, moto, aws, api_key)
    proc = ServiceProcess("service.api", env, tmp_path_factory.mktemp("api")).start(wait_for="/health")
    wait_until(lambda: httpx.get(proc.base_url + "/ready").status_code == 200, 60, f"ready\n{proc.tail()}")
    yield proc
    proc.stop()


@pytest.fixture
def client(api: ServiceProcess, api_key: str) -> Iterator[httpx.Client]:
    with api_client(api.base_url, api_key) as c:
        yield c


@pytest.fixture
def other_key(db: psycopg.Connection) -> tuple[str, str]:
    """A second API key, another tenant's: (key, name)."""
    return add_api_key(db, "tenant-b")


@pytest.fixture
def db(postgres: PostgresServer) -> Iterator[psycopg.Connection]:
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        yield conn


@pytest.fixture
def pool(postgres: PostgresServer) -> Iterator[ConnectionPool]:
    """The service's own database layer, on the schema it migrates to."""
    with ConnectionPool(postgres.dsn(), min_size=1, max_size=4, timeout=5) as p:
        migrations.upgrade(p)
        yield p
