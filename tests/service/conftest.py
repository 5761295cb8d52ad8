"""Fixtures for the service's tests: real PostgreSQL, Redis and moto servers on free loopback
ports, and the API and worker run as real processes (``python -m service.api``/``service.worker``)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from service_testkit import (
    AwsResources,
    MotoServer,
    PostgresServer,
    ServiceProcess,
    new_aws,
    own_redis,
    service_env,
    serving,
    wait_until,
)


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
    with httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30) as c:
        yield c


@pytest.fixture
def db(postgres: PostgresServer) -> Iterator[psycopg.Connection]:
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        yield conn
