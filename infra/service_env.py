"""The service's environment for a stack, once the data tiers' outputs are known: one contract for the EKS
pods (infra/workload.py's ConfigMap) and the EC2 instances (infra/app_fleet.py's env file).

What goes in is :func:`pynomaly_ops.environment.production_environment`; this module only waits for the
Pulumi outputs it needs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import pulumi

from pynomaly_ops.environment import production_environment


@dataclass(frozen=True)
class Coordinates:
    """Where a stack's service finds its dependencies: the data tiers' outputs, one set for pods and instances."""

    db_endpoint: pulumi.Input[str]  # the writer
    db_name: pulumi.Input[str]
    redis_endpoint: pulumi.Input[str]  # the primary
    queue_url: pulumi.Input[str]
    artifacts_bucket: pulumi.Input[str]

    def environment(self, *, app_port: int, region: str, redis_tls: bool = True) -> pulumi.Output[dict[str, str]]:
        """:func:`production_environment` once the outputs are known."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return pulumi.Output.all(**values).apply(
            lambda v: production_environment(**v, app_port=app_port, region=region, redis_tls=redis_tls)
        )
