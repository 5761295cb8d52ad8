"""Resilience, in a stack named prod: what keeps the service up through an instance, an AZ or a mistake."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import cast

from annotated_types import Ge
from pulumi_policy import PolicyResource

from policy.buckets import settings_of
from policy.resource_types import (
    ASG,
    BUCKET,
    BUCKET_VERSIONING,
    LOAD_BALANCER,
    QUEUE,
    RDS_INSTANCE,
    REPLICATION_GROUP,
    SUBNET,
)
from policy.rule import Problem, Props, Stack, linked_rule, referenced, resource_rule, truthy
from policy.stack import StackContext
from pynomaly_ops.settings import ZONE_COUNT, Database

# The fewest days of automated backups: the settings model's bound on db.backup_retention_days (the one place it
# is typed; baselines.yaml has no backup retention).
MIN_BACKUP_DAYS = cast(
    int, next(m.ge for m in Database.model_fields["backup_retention_days"].metadata if isinstance(m, Ge))
)


FAILOVER = {"automatic_failover_enabled": "automaticFailoverEnabled", "multi_az_enabled": "multiAzEnabled"}


def _primary(props: Props) -> bool:
    """Not a read replica: Multi-AZ and backups are the source's business."""
    return not props.get("replicateSourceDb")


@resource_rule("prod-rds-multi-az", "prod: the RDS primary has a Multi-AZ standby", [RDS_INSTANCE], production=True)
def rds_multi_az(props: Props, ctx: StackContext) -> Iterator[Problem]:
    if _primary(props) and not truthy(props.get("multiAz")):
        yield Problem(
            "multi_az is not true: losing its AZ loses the database",
            "multi_az=True (stack setting db.multi_az, which must stay true in prod)",
        )


@resource_rule("prod-rds-deletion-protection", "prod: RDS instances refuse deletion", [RDS_INSTANCE], production=True)
def rds_deletion_protection(props: Props, ctx: StackContext) -> Iterator[Problem]:
    if not truthy(props.get("deletionProtection")):
        yield Problem(
            "deletion_protection is not true", "deletion_protection=True (stack setting db.deletion_protection)"
        )


@resource_rule(
    "prod-rds-backups",
    f"prod: the RDS primary keeps at least {MIN_BACKUP_DAYS} days of automated backups",
    [RDS_INSTANCE],
    production=True,
)
def rds_backups(props: Props, ctx: StackContext) -> Iterator[Problem]:
    days = props.get("backupRetentionPeriod") or 0
    if _primary(props) and days < MIN_BACKUP_DAYS:
        yield Problem(
            f"keeps {days:g} days of backups, fewer than {MIN_BACKUP_DAYS}",
            f"backup_retention_period >= {MIN_BACKUP_DAYS} (stack setting db.backup_retention_days)",
        )


@resource_rule(
    "prod-elasticache-failover",
    "prod: ElastiCache fails over automatically to a replica in another AZ",
    [REPLICATION_GROUP],
    production=True,
)
def elasticache_failover(props: Props, ctx: StackContext) -> Iterator[Problem]:
    off = [arg for arg, key in FAILOVER.items() if not truthy(props.get(key))]
    if off:
        yield Problem(
            f"{' and '.join(off)} not true: a failed primary, or its AZ, waits for a manual promotion",
            ", ".join(f"{arg}=True" for arg in off) + " with at least one replica (stack setting cache.replicas)",
        )


@linked_rule(
    "prod-asg-capacity",
    f"prod: the app fleet spans at least {ZONE_COUNT} AZs with at least baselines.yaml's normal instance count",
    [ASG],
    production=True,
)
def asg_capacity(asg: PolicyResource, stack: Stack, ctx: StackContext) -> Iterator[Problem]:
    subnets = referenced(asg, "vpcZoneIdentifiers", SUBNET)
    # Subnets from outside the stack: their zones are unknown here, so each counts as one.
    zones = {s.props.get("availabilityZoneId") or s.props.get("availabilityZone") for s in subnets} or set(
        asg.props.get("vpcZoneIdentifiers") or []
    )
    if len(zones) < ZONE_COUNT:
        yield Problem(
            f"spans {len(zones)} availability zone(s), fewer than {ZONE_COUNT}",
            f"vpc_zone_identifiers: one app subnet in each of {ZONE_COUNT} AZs (infra/app_fleet.py)",
        )
    normal = ctx.numbers.scaling.instances_normal
    if (asg.props.get("minSize") or 0) < normal:
        yield Problem(
            f"min_size {asg.props.get('minSize') or 0:g} is below the normal fleet of {normal} instances",
            "min_size=baselines.yaml scaling.instances_normal (infra/app_fleet.py)",
        )


@linked_rule(
    "prod-sqs-dlq", "prod: every SQS queue (but a dead-letter queue) has a dead-letter queue", [QUEUE], production=True
)
def sqs_dead_letter_queues(queue: PolicyResource, stack: Stack, ctx: StackContext) -> Iterator[Problem]:
    if any(d.urn == queue.urn for q in stack.of_type(QUEUE) for d in referenced(q, "redrivePolicy", QUEUE)):
        return  # a dead-letter queue itself
    redrive = json.loads(queue.props.get("redrivePolicy") or "{}")
    if not redrive.get("deadLetterTargetArn"):
        yield Problem(
            "has no dead-letter queue: a message that always fails is retried until it expires",
            "redrive_policy with deadLetterTargetArn=<a dead-letter queue's ARN> and maxReceiveCount (infra/queues.py)",
        )


@linked_rule("prod-s3-versioning", "prod: every S3 bucket keeps object versions", [BUCKET], production=True)
def s3_versioning(bucket: PolicyResource, stack: Stack, ctx: StackContext) -> Iterator[Problem]:
    versionings = settings_of(bucket, stack, BUCKET_VERSIONING)
    if not any((v.props.get("versioningConfiguration") or {}).get("status") == "Enabled" for v in versionings):
        yield Problem(
            "versioning is not enabled: an overwritten or deleted object is gone",
            "an aws.s3.BucketVersioning for the bucket with versioning_configuration={'status': 'Enabled'}",
        )


@resource_rule(
    "prod-alb-deletion-protection", "prod: the load balancer refuses deletion", [LOAD_BALANCER], production=True
)
def alb_deletion_protection(props: Props, ctx: StackContext) -> Iterator[Problem]:
    if not truthy(props.get("enableDeletionProtection")):
        yield Problem(
            "enable_deletion_protection is not true",
            "enable_deletion_protection=True (stack setting lb.deletion_protection)",
        )
