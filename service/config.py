"""Settings from ``PYNOMALY_*`` environment variables: the service's only configuration.

Every variable has a default that works for a local run; a malformed value stops
start-up with a message naming the variable and what it expects.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")


class ConfigError(ValueError):
    """An environment variable holds a value the service cannot use."""


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    instance_id: str
    db_dsn: str
    db_pool_min: int
    db_pool_max: int
    db_connect_timeout_s: float
    db_statement_timeout_ms: int
    db_pool_timeout_s: float
    redis_url: str
    redis_sentinels: tuple[tuple[str, int], ...]
    redis_sentinel_master: str
    redis_password: str | None
    redis_password_file: str | None  # read on every new connection (rotation); see service/cache.py
    redis_timeout_s: float
    redis_retry_after_s: float
    cache_ttl_s: int
    aws_endpoint_url: str | None
    queue_url: str
    artifacts_bucket: str
    max_series_length: int
    max_body_bytes: int
    bootstrap_api_key: str | None
    detector_trees: int
    detector_processes: int
    detect_admit_timeout_s: float
    auth_cache_s: float
    shutdown_timeout_s: float
    worker_metrics_port: int
    worker_concurrency: int
    worker_wait_s: int


# Each setting's variable is PYNOMALY_ and its field name in upper case. Code that writes the service's
# environment (the EC2 user data) names variables through this mapping, never by typing them;
# tests/service checks that load_settings reads exactly these.
ENV_NAMES: dict[str, str] = {f.name: f"PYNOMALY_{f.name.upper()}" for f in fields(Settings)}


def _get(env: Mapping[str, str], name: str, default: T, parse: Callable[[str], T], expects: str) -> T:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is invalid: expected {expects}") from None


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:  # also refuses NaN
        raise ValueError
    return value


def _host_ports(raw: str) -> tuple[tuple[str, int], ...]:
    pairs = []
    for item in raw.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host:
            raise ValueError
        pairs.append((host, int(port)))
    return tuple(pairs)


def _optional(env: Mapping[str, str], name: str) -> str | None:
    return env.get(name, "").strip() or None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings; raise :class:`ConfigError` naming the bad variable."""
    env = os.environ if env is None else env
    pos_int, pos_float = "a positive integer", "a positive number"
    settings = Settings(
        host=env.get("PYNOMALY_HOST", "").strip() or "127.0.0.1",
        port=_get(env, "PYNOMALY_PORT", 8000, _non_negative_int, "a TCP port number"),
        instance_id=env.get("PYNOMALY_INSTANCE_ID", "").strip() or "local",
        db_dsn=env.get("PYNOMALY_DB_DSN", "").strip()
        or "host=127.0.0.1 port=5432 dbname=pynomaly user=pynomaly target_session_attrs=read-write",
        db_pool_min=_get(env, "PYNOMALY_DB_POOL_MIN", 2, _non_negative_int, "a non-negative integer"),
        db_pool_max=_get(env, "PYNOMALY_DB_POOL_MAX", 10, _positive_int, pos_int),
        db_connect_timeout_s=_get(env, "PYNOMALY_DB_CONNECT_TIMEOUT_S", 3.0, _positive_float, pos_float),
        db_statement_timeout_ms=_get(env, "PYNOMALY_DB_STATEMENT_TIMEOUT_MS", 5000, _positive_int, pos_int),
        db_pool_timeout_s=_get(env, "PYNOMALY_DB_POOL_TIMEOUT_S", 5.0, _positive_float, pos_float),
        redis_url=env.get("PYNOMALY_REDIS_URL", "").strip() or "redis://127.0.0.1:6379/0",
        redis_sentinels=_get(env, "PYNOMALY_REDIS_SENTINELS", (), _host_ports, "host:port[,host:port...]"),
        redis_sentinel_master=env.get("PYNOMALY_REDIS_SENTINEL_MASTER", "").strip() or "pynomaly",
        redis_password=_optional(env, "PYNOMALY_REDIS_PASSWORD"),
        redis_password_file=_optional(env, "PYNOMALY_REDIS_PASSWORD_FILE"),
        redis_timeout_s=_get(env, "PYNOMALY_REDIS_TIMEOUT_S", 0.5, _positive_float, pos_float),
        redis_retry_after_s=_get(env, "PYNOMALY_REDIS_RETRY_AFTER_S", 1.0, _positive_float, pos_float),
        cache_ttl_s=_get(env, "PYNOMALY_CACHE_TTL_S", 3600, _positive_int, pos_int),
        aws_endpoint_url=_optional(env, "PYNOMALY_AWS_ENDPOINT_URL"),
        queue_url=env.get("PYNOMALY_QUEUE_URL", "").strip(),
        artifacts_bucket=env.get("PYNOMALY_ARTIFACTS_BUCKET", "").strip(),
        max_series_length=_get(env, "PYNOMALY_MAX_SERIES_LENGTH", 100_000, _positive_int, pos_int),
        max_body_bytes=_get(env, "PYNOMALY_MAX_BODY_BYTES", 16 * 1024 * 1024, _positive_int, pos_int),
        bootstrap_api_key=_optional(env, "PYNOMALY_BOOTSTRAP_API_KEY"),
        detector_trees=_get(env, "PYNOMALY_DETECTOR_TREES", 5, _positive_int, pos_int),
        detector_processes=_get(env, "PYNOMALY_DETECTOR_PROCESSES", os.cpu_count() or 1, _non_negative_int, "0+"),
        detect_admit_timeout_s=_get(env, "PYNOMALY_DETECT_ADMIT_TIMEOUT_S", 2.0, _positive_float, pos_float),
        auth_cache_s=_get(env, "PYNOMALY_AUTH_CACHE_S", 10.0, _non_negative_float, "seconds, 0 = no cache"),
        shutdown_timeout_s=_get(env, "PYNOMALY_SHUTDOWN_TIMEOUT_S", 20.0, _positive_float, pos_float),
        worker_metrics_port=_get(env, "PYNOMALY_WORKER_METRICS_PORT", 0, _non_negative_int, "a TCP port, 0 = off"),
        worker_concurrency=_get(env, "PYNOMALY_WORKER_CONCURRENCY", 1, _positive_int, pos_int),
        worker_wait_s=_get(env, "PYNOMALY_WORKER_WAIT_S", 2, _non_negative_int, "0-20 seconds"),
    )
    _check(settings)
    return settings


def read_password_file(path: str) -> str:
    """The Redis password in ``path`` (surrounding whitespace dropped); OSError or ValueError if unusable."""
    password = Path(path).read_text().strip()
    if not password:
        raise ValueError("the file is empty")
    return password


def _check_redis_password_file(s: Settings) -> None:
    if s.redis_password_file is None:
        return
    if s.redis_password is not None or urlsplit(s.redis_url).password:
        raise ConfigError(
            "PYNOMALY_REDIS_PASSWORD_FILE is set together with a password (PYNOMALY_REDIS_PASSWORD or one in "
            "PYNOMALY_REDIS_URL): set only one"
        )
    try:
        read_password_file(s.redis_password_file)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"PYNOMALY_REDIS_PASSWORD_FILE={s.redis_password_file!r} cannot be used ({exc}): "
            "point it at a readable file holding the Redis AUTH password"
        ) from None


def _check(s: Settings) -> None:
    _check_redis_password_file(s)
    if s.db_pool_min > s.db_pool_max:
        raise ConfigError(
            f"PYNOMALY_DB_POOL_MIN ({s.db_pool_min}) must not exceed PYNOMALY_DB_POOL_MAX ({s.db_pool_max})"
        )
    if s.worker_wait_s > 20:
        raise ConfigError(f"PYNOMALY_WORKER_WAIT_S={s.worker_wait_s} is invalid: SQS allows 0-20 seconds")
    if s.bootstrap_api_key is not None and len(s.bootstrap_api_key) < 16:
        raise ConfigError("PYNOMALY_BOOTSTRAP_API_KEY is too short: use at least 16 random characters")


def require(value: str, name: str) -> str:
    """Return a setting needed by the caller's feature, or say which variable to set."""
    if not value:
        raise ConfigError(f"{name} is not set: batch jobs (the worker and /api/v1/jobs) need it")
    return value
