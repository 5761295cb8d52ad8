"""Cache tier: ElastiCache Redis, a primary and replicas across the AZs.

Automatic failover and Multi-AZ on; encrypted at rest (KMS) and in transit;
clients authenticate with an AUTH token generated as a Pulumi secret, so it
is encrypted in state and never typed anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from infra.network import Network
from infra.settings import Cache as CacheSettings
from infra.tier import Tier

PORT = 6379
# ElastiCache AUTH tokens allow printable ASCII except space, '"', '/' and '@'.
TOKEN_SPECIALS = "!&#$^<>-"
TOKEN_LENGTH = 64


@dataclass(frozen=True)
class CacheArgs:
    settings: CacheSettings
    network: Network
    data_subnet_ids: list[pulumi.Input[str]]
    availability_zones: pulumi.Input[list[str]]
    allowed_security_group_ids: list[pulumi.Input[str]]
    kms_key_arn: pulumi.Input[str]
    logs_kms_key_arn: pulumi.Input[str]


def member_cluster_ids(replication_group_id: str, nodes: int) -> list[str]:
    """ElastiCache names a replication group's nodes ``<group>-001``, ``-002``..."""
    return [f"{replication_group_id}-{i:03d}" for i in range(1, nodes + 1)]


class Cache(Tier):
    TIER = "cache"

    def __init__(self, stack: str, tags: dict[str, str], args: CacheArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(stack, tags, opts)
        s = args.settings
        nodes = 1 + s.replicas
        group_id = self.name_of("redis")
        sg = args.network.service_security_group(self, "sg", PORT, args.allowed_security_group_ids, "Redis")
        subnets = aws.elasticache.SubnetGroup(
            self.name_of("subnets"),
            name=self.name_of("subnets"),
            subnet_ids=args.data_subnet_ids,
            tags=self.tagged("subnets"),
            opts=self.child,
        )
        token = random.RandomPassword(
            self.name_of("auth-token"),
            length=TOKEN_LENGTH,
            special=True,
            override_special=TOKEN_SPECIALS,
            opts=self.child,
        )
        slow_log = aws.cloudwatch.LogGroup(
            self.name_of("slow-log"),
            name=f"/pynomaly/{stack}/redis-slow-log",
            retention_in_days=30,
            kms_key_id=args.logs_kms_key_arn,
            tags=self.tagged("slow-log"),
            opts=self.child,
        )
        group = aws.elasticache.ReplicationGroup(
            self.name_of("redis"),
            replication_group_id=group_id,
            description=f"Pynomaly cache ({stack})",
            engine="redis",
            engine_version=s.engine_version,
            node_type=s.node_type,
            port=PORT,
            num_cache_clusters=nodes,
            preferred_cache_cluster_azs=pulumi.Output.from_input(args.availability_zones).apply(
                lambda zones: [zones[i % len(zones)] for i in range(nodes)]
            ),
            automatic_failover_enabled=True,
            multi_az_enabled=True,
            at_rest_encryption_enabled=True,
            kms_key_id=args.kms_key_arn,
            transit_encryption_enabled=True,
            auth_token=token.result,
            auth_token_update_strategy="ROTATE",
            subnet_group_name=subnets.name,
            security_group_ids=[sg.id],
            snapshot_retention_limit=s.snapshot_retention_days,
            snapshot_window="02:00-03:00",
            maintenance_window="sun:05:30-sun:06:30",
            auto_minor_version_upgrade=True,
            log_delivery_configurations=[
                {
                    "destination": slow_log.name,
                    "destination_type": "cloudwatch-logs",
                    "log_format": "json",
                    "log_type": "slow-log",
                }
            ],
            tags=self.tagged("redis"),
            opts=self.child,
        )
        self.finish(
            primary_endpoint=group.primary_endpoint_address,
            reader_endpoint=group.reader_endpoint_address,
            auth_token=token.result,
            replication_group_id=group_id,
            member_cluster_ids=member_cluster_ids(group_id, nodes),
            security_group_id=sg.id,
        )
