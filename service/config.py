"""Settings from ``PYNOMALY_*`` environment variables: the service's only configuration.

Every variable has a default that works for a local run; a malformed value stops
start-up with a message naming the variable and what it expects.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from pynomaly_ops.environment import DEFAULT_MAX_BODY_BYTES, ENV_NAMES, Settings
from service.schemas import MAX_POINTS

T = TypeVar("T")


class ConfigError(ValueError):
    """An environment variable holds a value the service cannot use."""


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


def _bool(raw: str) -> bool:
    words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    if raw.lower() not in words:
        raise ValueError
    return words[raw.lower()]


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
        host=env.get(ENV_NAMES["host"], "").strip() or "127.0.0.1",
        port=_get(env, ENV_NAMES["port"], 8000, _non_negative_int, "a TCP port number"),
        instance_id=env.get(ENV_NAMES["instance_id"], "").strip() or "local",
        db_dsn=env.get(ENV_NAMES["db_dsn"], "").strip()
        or "host=127.0.0.1 port=5432 dbname=pynomaly user=pynomaly target_session_attrs=read-write",
        db_pool_min=_get(env, ENV_NAMES["db_pool_min"], 2, _non_negative_int, "a non-negative integer"),
        db_pool_max=_get(env, ENV_NAMES["db_pool_max"], 10, _positive_int, pos_int),
        db_connect_timeout_s=_get(env, ENV_NAMES["db_connect_timeout_s"], 3.0, _positive_float, pos_float),
        db_statement_timeout_ms=_get(env, ENV_NAMES["db_statement_timeout_ms"], 5000, _positive_int, pos_int),
        db_pool_timeout_s=_get(env, ENV_NAMES["db_pool_timeout_s"], 5.0, _positive_float, pos_float),
        redis_url=env.get(ENV_NAMES["redis_url"], "").strip() or "redis://127.0.0.1:6379/0",
        redis_sentinels=_get(env, ENV_NAMES["redis_sentinels"], (), _host_ports, "host:port[,host:port...]"),
        redis_sentinel_master=env.get(ENV_NAMES["redis_sentinel_master"], "").strip() or "pynomaly",
        redis_password=_optional(env, ENV_NAMES["redis_password"]),
        redis_password_file=_optional(env, ENV_NAMES["redis_password_file"]),
        redis_timeout_s=_get(env, ENV_NAMES["redis_timeout_s"], 0.5, _positive_float, pos_float),
        redis_retry_after_s=_get(env, ENV_NAMES["redis_retry_after_s"], 1.0, _positive_float, pos_float),
        cache_ttl_s=_get(env, ENV_NAMES["cache_ttl_s"], 3600, _positive_int, pos_int),
        aws_endpoint_url=_optional(env, ENV_NAMES["aws_endpoint_url"]),
        queue_url=env.get(ENV_NAMES["queue_url"], "").strip(),
        artifacts_bucket=env.get(ENV_NAMES["artifacts_bucket"], "").strip(),
        max_series_length=_get(env, ENV_NAMES["max_series_length"], 100_000, _positive_int, pos_int),
        max_body_bytes=_get(env, ENV_NAMES["max_body_bytes"], DEFAULT_MAX_BODY_BYTES, _positive_int, pos_int),
        docs=_get(env, ENV_NAMES["docs"], False, _bool, "true or false"),
        bootstrap_api_key=_optional(env, ENV_NAMES["bootstrap_api_key"]),
        detector_trees=_get(env, ENV_NAMES["detector_trees"], 5, _positive_int, pos_int),
        detector_processes=_get(env, ENV_NAMES["detector_processes"], os.cpu_count() or 1, _non_negative_int, "0+"),
        detect_admit_timeout_s=_get(env, ENV_NAMES["detect_admit_timeout_s"], 2.0, _positive_float, pos_float),
        auth_cache_s=_get(env, ENV_NAMES["auth_cache_s"], 10.0, _non_negative_float, "seconds, 0 = no cache"),
        shutdown_timeout_s=_get(env, ENV_NAMES["shutdown_timeout_s"], 20.0, _positive_float, pos_float),
        worker_metrics_port=_get(env, ENV_NAMES["worker_metrics_port"], 0, _non_negative_int, "a TCP port, 0 = off"),
        worker_concurrency=_get(env, ENV_NAMES["worker_concurrency"], 1, _positive_int, pos_int),
        worker_wait_s=_get(env, ENV_NAMES["worker_wait_s"], 2, _non_negative_int, "0-20 seconds"),
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
    file_var = ENV_NAMES["redis_password_file"]
    if s.redis_password is not None or urlsplit(s.redis_url).password:
        raise ConfigError(
            f"{file_var} is set together with a password ({ENV_NAMES['redis_password']} or one in "
            f"{ENV_NAMES['redis_url']}): set only one"
        )
    try:
        read_password_file(s.redis_password_file)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{file_var}={s.redis_password_file!r} cannot be used ({exc}): "
            "point it at a readable file holding the Redis AUTH password"
        ) from None


def _check(s: Settings) -> None:
    _check_redis_password_file(s)
    if s.db_pool_min > s.db_pool_max:
        raise ConfigError(
            f"{ENV_NAMES['db_pool_min']} ({s.db_pool_min}) must not exceed {ENV_NAMES['db_pool_max']} ({s.db_pool_max})"
        )
    if s.worker_wait_s > 20:
        raise ConfigError(f"{ENV_NAMES['worker_wait_s']}={s.worker_wait_s} is invalid: SQS allows 0-20 seconds")
    if s.max_series_length > MAX_POINTS:
        raise ConfigError(f"{ENV_NAMES['max_series_length']}={s.max_series_length} is invalid: at most {MAX_POINTS}")
    if s.bootstrap_api_key is not None and len(s.bootstrap_api_key) < 16:
        raise ConfigError(f"{ENV_NAMES['bootstrap_api_key']} is too short: use at least 16 random characters")


def require(settings: Settings, name: str) -> str:
    """Return the setting ``name`` needed by the caller's feature, or say which variable to set."""
    value = getattr(settings, name)
    if not value:
        raise ConfigError(f"{ENV_NAMES[name]} is not set: batch jobs (the worker and /api/v1/jobs) need it")
    return value
