"""The reference service's environment contract: every setting, its variable, and the environment built
from a target's coordinates.

The service reads its settings through these names (service/config.py); the Pulumi program (the EC2 env
file, the pods' ConfigMap) and the local stack write them through :func:`environment`. No ``PYNOMALY_*``
setting name is typed anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from pynomaly_ops import ports


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
    docs: bool  # the /docs and /redoc pages (off unless asked for: they are not for production)
    bootstrap_api_key: str | None
    detector_trees: int
    detector_processes: int
    detect_admit_timeout_s: float
    auth_cache_s: float
    shutdown_timeout_s: float
    worker_metrics_port: int
    worker_concurrency: int
    worker_wait_s: int


# The service's body limit unless PYNOMALY_MAX_BODY_BYTES says otherwise; the load balancers refuse a longer
# declared body before it reaches an instance.
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
# The instance's own pages (Prometheus scrapes them, health checks and operators use them on the instance port):
# every load balancer answers them 404 (HAProxy locally, the ALB's listener rule in AWS).
INTERNAL_PATHS = ("/metrics", "/ready", "/openapi.json")
INTERNAL_PREFIXES = ("/docs", "/redoc")
# Each setting's variable is PYNOMALY_ and its field name in upper case.
ENV_NAMES: dict[str, str] = {f.name: f"PYNOMALY_{f.name.upper()}" for f in fields(Settings)}
# The libpq service-file section a production DSN names instead of a user and password.
PG_SERVICE = "pynomaly"


class UnknownSetting(KeyError):
    """A name that is not one of the service's settings."""


def environment(**values: object) -> dict[str, str]:
    """``{PYNOMALY_<NAME>: str(value)}`` for settings given by field name; an unknown name is refused."""
    unknown = sorted(set(values) - set(ENV_NAMES))
    if unknown:
        raise UnknownSetting(f"not a service setting: {', '.join(unknown)} (the settings: {', '.join(ENV_NAMES)})")
    return {ENV_NAMES[name]: _text(value) for name, value in values.items()}


def _text(value: object) -> str:
    if isinstance(value, tuple | list):  # host:port pairs
        return ",".join(f"{h}:{p}" for h, p in value)
    return str(value)


def split_endpoint(endpoint: str, default_port: int) -> tuple[str, int]:
    """``host:port`` or ``host`` -> (host, port)."""
    host, _, port = endpoint.rpartition(":") if ":" in endpoint else (endpoint, "", "")
    return host, int(port) if port else default_port


def production_db_dsn(endpoint: str, db_name: str) -> str:
    """libpq conninfo without user or password: those come from the service file ``service=`` names. The server
    is verified (``verify-full``: its certificate chains to the RDS CA bundle PGSSLROOTCERT names, and names
    the host), not only encrypted to: ``require`` would talk to anyone answering on the endpoint's address."""
    host, port = split_endpoint(endpoint, ports.POSTGRES)
    return f"host={host} port={port} dbname={db_name} sslmode=verify-full service={PG_SERVICE}"


def production_environment(
    *,
    db_endpoint: str,
    db_name: str,
    redis_endpoint: str,
    queue_url: str,
    artifacts_bucket: str,
    app_port: int,
    region: str,
    redis_tls: bool = True,
) -> dict[str, str]:
    """What every API and worker process of an AWS stack needs to find the platform. No secret goes in: the
    DSN names a libpq service file and the Redis URL carries no token."""
    scheme = "rediss" if redis_tls else "redis"
    redis_host, redis_port = split_endpoint(redis_endpoint, ports.REDIS)
    return environment(
        host="0.0.0.0",  # reached through the load balancer; security groups admit only it
        port=app_port,
        db_dsn=production_db_dsn(db_endpoint, db_name),
        redis_url=f"{scheme}://{redis_host}:{redis_port}/0",
        queue_url=queue_url,
        artifacts_bucket=artifacts_bucket,
        worker_metrics_port=ports.WORKER_METRICS,  # scraped: the processing-lag alarm
    ) | {"AWS_DEFAULT_REGION": region}
