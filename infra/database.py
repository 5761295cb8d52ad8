"""Database tier: RDS PostgreSQL, Multi-AZ, with a read replica where the stack asks.

The master password lives in Secrets Manager (``manage_master_user_password``):
no password is in config or state. The parameter group carries the 001
tuning from the numbers file and loads pg_stat_statements (004 queries it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from infra.network import Network
from infra.tier import Tier, assume_role_policy
from pynomaly_ops import ports
from pynomaly_ops.baselines import Database as DatabaseBaselines
from pynomaly_ops.naming import DB_NAME
from pynomaly_ops.settings import Database as DatabaseSettings

PORT = ports.POSTGRES
USERNAME = "pynomaly"
PAGE_KB = 8  # PostgreSQL memory settings are counted in 8 kB pages
LOG_EXPORTS = ["postgresql", "upgrade"]


@dataclass(frozen=True)
class DatabaseArgs:
    settings: DatabaseSettings
    tuning: DatabaseBaselines
    network: Network
    data_subnet_ids: Sequence[pulumi.Input[str]]
    allowed_security_group_ids: Sequence[pulumi.Input[str]]
    kms_key_arn: pulumi.Input[str]


def parameters(tuning: DatabaseBaselines) -> list[aws.rds.ParameterGroupParameterArgsDict]:
    """The 001 tuning plus pg_stat_statements and TLS-only connections."""
    static = "pending-reboot"  # these need a restart; RDS applies them at the next one
    return [
        {"name": "max_connections", "value": str(tuning.max_connections), "apply_method": static},
        {"name": "shared_buffers", "value": str(tuning.shared_buffers_mb * 1024 // PAGE_KB), "apply_method": static},
        {"name": "effective_cache_size", "value": str(tuning.effective_cache_size_mb * 1024 // PAGE_KB)},
        {"name": "shared_preload_libraries", "value": "pg_stat_statements", "apply_method": static},
        {"name": "pg_stat_statements.track", "value": "all"},
        {"name": "rds.force_ssl", "value": "1"},
    ]


def master_secret_arn(secrets: Sequence[aws.rds.outputs.InstanceMasterUserSecret]) -> str:
    """The secret RDS keeps the master password in: it reports one whenever it manages the password."""
    arn = secrets[0].secret_arn
    if arn is None:
        raise ValueError("RDS reported the master user secret without its ARN")
    return arn


class Database(Tier):
    TIER = "database"

    writer_endpoint: pulumi.Output[str]
    reader_endpoint: pulumi.Output[str]  # the replica's, or the primary's where the stack has no replica
    secret_arn: pulumi.Output[str]  # the master password's, managed by RDS
    primary_identifier: str
    replica_identifier: str | None
    allocated_storage_gb: dict[str, pulumi.Output[int]]  # by identifier, as RDS reports it (autoscaling grows it)
    primary_arn: pulumi.Output[str]
    resource_id: pulumi.Output[str]
    security_group_id: pulumi.Output[str]
    username: str
    db_name: str

    def __init__(
        self, stack: str, tags: dict[str, str], args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__(stack, tags, opts)
        s = args.settings
        major = s.engine_version.split(".")[0]
        sg = args.network.service_security_group(self, "sg", PORT, args.allowed_security_group_ids, "PostgreSQL")
        subnets = aws.rds.SubnetGroup(
            self.name_of("subnets"),
            name=self.name_of("subnets"),
            subnet_ids=args.data_subnet_ids,
            tags=self.tagged("subnets"),
            opts=self.child,
        )
        # Auto-named: a new db.engine_version major changes the family, which replaces the group; the replacement
        # is created (and the instance switched to it) before the old one goes, so a fixed name would collide.
        params = aws.rds.ParameterGroup(
            self.name_of("params"),
            family=f"postgres{major}",
            parameters=parameters(args.tuning),
            tags=self.tagged("params"),
            opts=self.child,
        )
        monitoring = aws.iam.Role(
            self.name_of("monitoring-role"),
            assume_role_policy=assume_role_policy("monitoring.rds.amazonaws.com"),
            tags=self.tagged("monitoring-role"),
            opts=self.child,
        )
        attach = aws.iam.RolePolicyAttachment(
            self.name_of("monitoring-policy"),
            role=monitoring.name,
            policy_arn="arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole",
            opts=self.child,
        )
        # Inputs the primary and the replica share (keyword arguments of either).
        common: dict[str, Any] = {
            "instance_class": s.instance_class,
            "vpc_security_group_ids": [sg.id],
            "parameter_group_name": params.name,
            "storage_encrypted": True,
            "performance_insights_enabled": True,
            "performance_insights_kms_key_id": args.kms_key_arn,
            "performance_insights_retention_period": 7,
            "monitoring_interval": s.monitoring_interval_s,
            "monitoring_role_arn": monitoring.arn,
            "iam_database_authentication_enabled": True,
            "enabled_cloudwatch_logs_exports": LOG_EXPORTS,
            "auto_minor_version_upgrade": True,
            "publicly_accessible": False,
            "copy_tags_to_snapshot": True,
            "deletion_protection": s.deletion_protection,
        }
        # The final snapshot outlives the instance, so each instance's lifetime names its own: with a fixed
        # identifier the second destroy fails (DBSnapshotAlreadyExists).
        # (RandomPassword is random_string with its result marked sensitive; this one names a snapshot, so it
        # is unmarked. Lowercase letters and digits: what a snapshot identifier may hold.)
        final_snapshot_suffix = random.RandomPassword(
            self.name_of("primary-final-suffix"), length=8, special=False, upper=False, opts=self.child
        )
        child_after_role = pulumi.ResourceOptions.merge(self.child, pulumi.ResourceOptions(depends_on=[attach]))
        primary = aws.rds.Instance(
            self.name_of("primary"),
            identifier=self.name_of("primary"),
            engine="postgres",
            engine_version=s.engine_version,
            # db.engine_version is the major version: changing it in the stack file is the upgrade, which RDS
            # refuses without this flag.
            allow_major_version_upgrade=True,
            db_name=DB_NAME,
            username=USERNAME,
            manage_master_user_password=True,
            master_user_secret_kms_key_id=args.kms_key_arn,
            port=PORT,
            multi_az=s.multi_az,
            db_subnet_group_name=subnets.name,
            storage_type="gp3",
            kms_key_id=args.kms_key_arn,
            allocated_storage=s.allocated_storage_gb,
            max_allocated_storage=s.max_allocated_storage_gb,
            backup_retention_period=s.backup_retention_days,
            backup_window="03:00-04:00",
            maintenance_window="sun:04:30-sun:05:30",
            delete_automated_backups=False,
            skip_final_snapshot=False,
            final_snapshot_identifier=pulumi.Output.concat(
                self.name_of("primary-final-"), pulumi.Output.unsecret(final_snapshot_suffix.result)
            ),
            tags=self.tagged("primary"),
            **common,
            opts=child_after_role,
        )
        replica: aws.rds.Instance | None = None
        if s.read_replica:
            replica = aws.rds.Instance(
                self.name_of("replica"),
                identifier=self.name_of("replica"),
                replicate_source_db=primary.identifier,
                # No kms_key_id: a same-region replica is always encrypted with its source's key, and
                # CreateDBInstanceReadReplica refuses the parameter (InvalidParameterCombination, "Your request
                # does not require the KMS key parameter"); see the API reference's KmsKeyId.
                # A replica's storage autoscales on its own (it does not follow the primary's growth).
                max_allocated_storage=s.max_allocated_storage_gb,
                # A replica takes no backups and cannot keep a final snapshot.
                skip_final_snapshot=True,
                tags=self.tagged("replica"),
                **common,
                opts=child_after_role,
            )
        reader = replica or primary
        self.writer_endpoint = primary.address
        self.reader_endpoint = reader.address
        self.secret_arn = primary.master_user_secrets.apply(master_secret_arn)
        self.primary_identifier = self.name_of("primary")
        self.replica_identifier = self.name_of("replica") if replica else None
        self.allocated_storage_gb = {self.primary_identifier: primary.allocated_storage}
        if replica is not None and self.replica_identifier is not None:
            # A replica starts at its source's size, which stands in until RDS reports the replica's own.
            self.allocated_storage_gb[self.replica_identifier] = pulumi.Output.all(
                replica.allocated_storage, primary.allocated_storage
            ).apply(lambda sizes: sizes[0] or sizes[1])
        self.primary_arn = primary.arn
        self.resource_id = primary.resource_id
        self.security_group_id = sg.id
        self.username = USERNAME
        self.db_name = DB_NAME
        self.register_outputs(
            {
                "writer_endpoint": self.writer_endpoint,
                "reader_endpoint": self.reader_endpoint,
                "secret_arn": self.secret_arn,
                "primary_identifier": self.primary_identifier,
                "replica_identifier": self.replica_identifier,
                "primary_arn": self.primary_arn,
                "resource_id": self.resource_id,
                "security_group_id": self.security_group_id,
                "username": self.username,
                "db_name": self.db_name,
            }
        )
