"""Cache tier: ElastiCache Redis, a primary and replicas across the AZs.

Automatic failover and Multi-AZ on; encrypted at rest (KMS) and in transit;
clients authenticate with an AUTH token generated as a Pulumi secret, so it
is encrypted in state and never typed anywhere. The token is also stored in a
Secrets Manager secret (encrypted with the cache key), which is how clients get
it: the app fleet reads it at boot and the pods' credentials sidecar keeps a
file of it current, each role allowed that one secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from infra.network import Network
from infra.tier import Tier
from pynomaly_ops import ports
from pynomaly_ops.settings import Cache as CacheSettings

PORT = ports.REDIS
# ElastiCache AUTH tokens allow printable ASCII except space, '"', '/' and '@'.
TOKEN_SPECIALS = "!&#$^<>-"
TOKEN_LENGTH = 64


@dataclass(frozen=True)
class CacheArgs:
    settings: CacheSettings
    network: Network
    data_subnet_ids: Sequence[pulumi.Input[str]]
    availability_zones: pulumi.Input[list[str]]
    allowed_security_group_ids: Sequence[pulumi.Input[str]]
    kms_key_arn: pulumi.Input[str]
    logs_kms_key_arn: pulumi.Input[str]


def member_cluster_ids(replication_group_id: str, nodes: int) -> list[str]:
    """ElastiCache names a replication group's nodes ``<group>-001``, ``-002``..."""
    return [f"{replication_group_id}-{i:03d}" for i in range(1, nodes + 1)]


class Cache(Tier):
    TIER = "cache"

    primary_endpoint: pulumi.Output[str]
    reader_endpoint: pulumi.Output[str]
    auth_token: pulumi.Output[str]  # a secret Output
    auth_secret_arn: pulumi.Output[str]  # where clients read the token
    replication_group_id: str
    member_cluster_ids: list[str]
    security_group_id: pulumi.Output[str]

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
        auth_secret = self._auth_secret(token, args.kms_key_arn)
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
        self.primary_endpoint = group.primary_endpoint_address
        self.reader_endpoint = group.reader_endpoint_address
        self.auth_token = token.result
        self.auth_secret_arn = auth_secret.arn
        self.replication_group_id = group_id
        self.member_cluster_ids = member_cluster_ids(group_id, nodes)
        self.security_group_id = sg.id
        self.register_outputs(
            {
                "primary_endpoint": self.primary_endpoint,
                "reader_endpoint": self.reader_endpoint,
                "auth_token": self.auth_token,
                "auth_secret_arn": self.auth_secret_arn,
                "replication_group_id": self.replication_group_id,
                "member_cluster_ids": self.member_cluster_ids,
                "security_group_id": self.security_group_id,
            }
        )

    def _auth_secret(self, token: random.RandomPassword, kms_key_arn: pulumi.Input[str]) -> aws.secretsmanager.Secret:
        """The AUTH token in Secrets Manager: its value only in the version's secret input (encrypted in state)."""
        secret = aws.secretsmanager.Secret(
            self.name_of("auth-secret"),
            name=self.name_of("auth-secret"),
            description="AUTH token of the Pynomaly Redis replication group (clients read it at start)",
            kms_key_id=kms_key_arn,
            # Deleted at once on destroy: with the default 30-day recovery window the fixed name stays "scheduled
            # for deletion" and a redeploy within 30 days fails to create it (the token is re-made on a redeploy).
            recovery_window_in_days=0,
            tags=self.tagged("auth-secret"),
            opts=self.child,
        )
        aws.secretsmanager.SecretVersion(
            self.name_of("auth-secret-value"),
            secret_id=secret.id,
            secret_string=token.result,  # a secret Output: Pulumi keeps it encrypted
            opts=self.child,
        )
        return secret
