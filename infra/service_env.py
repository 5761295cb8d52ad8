"""The reference service's environment from the platform's coordinates: one contract for the EKS pods
(infra/workload.py's ConfigMap) and the EC2 instances (infra/app_fleet.py's env file).

Variable names come from ``service.config.ENV_NAMES``. No secret value goes in: the DSN names a libpq
service file (written from Secrets Manager next to the process) instead of a user and password, and the
Redis URL carries no token.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import pulumi

from infra import pod_specs
from infra.cache import PORT as REDIS_PORT
from infra.database import PORT as POSTGRES_PORT
from service.config import ENV_NAMES

WORKER_METRICS_PORT = 9102


def split_endpoint(endpoint: str, default_port: int) -> tuple[str, int]:
    """``host:port`` or ``host`` -> (host, port)."""
    host, _, port = endpoint.rpartition(":") if ":" in endpoint else (endpoint, "", "")
    return host, int(port) if port else default_port


def db_dsn(endpoint: str, db_name: str) -> str:
    """libpq conninfo without user or password: those come from the service file ``service=`` names."""
    host, port = split_endpoint(endpoint, POSTGRES_PORT)
    return f"host={host} port={port} dbname={db_name} sslmode=require service={pod_specs.PG_SERVICE}"


@dataclass(frozen=True)
class Coordinates:
    """Where a stack's service finds its dependencies: the data tiers' outputs, one set for pods and instances."""

    db_endpoint: pulumi.Input[str]  # the writer
    db_name: pulumi.Input[str]
    redis_endpoint: pulumi.Input[str]  # the primary
    queue_url: pulumi.Input[str]
    artifacts_bucket: pulumi.Input[str]

    def environment(self, *, app_port: int, region: str, redis_tls: bool = True) -> pulumi.Output[dict[str, str]]:
        """:func:`service_environment` once the outputs are known."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return pulumi.Output.all(**values).apply(
            lambda v: service_environment(**v, app_port=app_port, region=region, redis_tls=redis_tls)
        )


def service_environment(
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
    """What every API and worker process of a stack needs to find the platform."""
    scheme = "rediss" if redis_tls else "redis"
    return {
        ENV_NAMES["host"]: "0.0.0.0",  # reached through the load balancer; security groups admit only it
        ENV_NAMES["port"]: str(app_port),
        ENV_NAMES["db_dsn"]: db_dsn(db_endpoint, db_name),
        ENV_NAMES["redis_url"]: "{}://{}:{}/0".format(scheme, *split_endpoint(redis_endpoint, REDIS_PORT)),
        ENV_NAMES["queue_url"]: queue_url,
        ENV_NAMES["artifacts_bucket"]: artifacts_bucket,
        ENV_NAMES["worker_metrics_port"]: str(WORKER_METRICS_PORT),  # scraped: the processing-lag alarm
        "AWS_DEFAULT_REGION": region,
    }
