"""Keys tier (KMS customer-managed keys, rotated) and backup tier (AWS Backup).

One key per purpose, so revoking or auditing one tier's data does not touch
the others. Services that use a key through their own principal (CloudWatch
Logs encrypting log groups, CloudWatch publishing alarms to encrypted SNS
topics, AWS Backup) are granted it in the key policy; everything else goes
through callers' IAM policies, which the account-root statement enables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.tier import Tier, assume_role_policy, policy_document
from pynomaly_ops.settings import Backup as BackupSettings

PURPOSES = ("logs", "storage", "database", "cache", "queue", "alarms", "backup", "cluster")
KEY_USE = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]


@dataclass(frozen=True)
class KeysArgs:
    account_id: pulumi.Input[str]
    region: str


def _service_grants(purpose: str, account_id: pulumi.Input[str], region: str) -> list[dict]:
    """Key-policy statements for services that use the key under their own identity."""
    if purpose == "logs":
        log_groups = pulumi.Output.concat("arn:aws:logs:", region, ":", account_id, ":log-group:*")
        return [
            {
                "Sid": "CloudWatchLogs",
                "Effect": "Allow",
                "Principal": {"Service": f"logs.{region}.amazonaws.com"},
                "Action": KEY_USE,
                "Resource": "*",
                "Condition": {"ArnLike": {"kms:EncryptionContext:aws:logs:arn": log_groups}},
            }
        ]
    if purpose == "alarms":
        # Only on behalf of this account's alarms (the confused-deputy guard; CloudWatch's requests carry both).
        alarms = pulumi.Output.concat("arn:aws:cloudwatch:", region, ":", account_id, ":alarm:*")
        return [
            {
                "Sid": "CloudWatchAlarmsPublish",
                "Effect": "Allow",
                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:SourceAccount": account_id}, "ArnLike": {"aws:SourceArn": alarms}},
            }
        ]
    return []


class Keys(Tier):
    TIER = "keys"

    keys: dict[str, aws.kms.Key]
    arns: dict[str, pulumi.Output[str]]

    def __init__(self, stack: str, tags: dict[str, str], args: KeysArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(stack, tags, opts)
        root = pulumi.Output.concat("arn:aws:iam::", args.account_id, ":root")
        self.keys = {}
        for purpose in PURPOSES:
            admin = {
                "Sid": "AccountAdministers",
                "Effect": "Allow",
                "Principal": {"AWS": root},
                "Action": "kms:*",
                "Resource": "*",
            }
            key = aws.kms.Key(
                self.name_of(purpose),
                description=f"{stack} {purpose} encryption key",
                enable_key_rotation=True,
                rotation_period_in_days=365,
                deletion_window_in_days=30,
                policy=policy_document(admin, *_service_grants(purpose, args.account_id, args.region)),
                tags=self.tagged(purpose),
                opts=self.child,
            )
            aws.kms.Alias(
                self.name_of(f"{purpose}-alias"),
                name=f"alias/{self.name_of(purpose)}",
                target_key_id=key.key_id,
                opts=self.child,
            )
            self.keys[purpose] = key
        self.arns = {p: k.arn for p, k in self.keys.items()}
        self.register_outputs({"keys": self.keys, "arns": self.arns})

    def arn(self, purpose: str) -> pulumi.Output[str]:
        return self.arns[purpose]


# AWS-managed policies AWS Backup needs to back up and restore RDS and S3.
BACKUP_ROLE_POLICIES = {
    "backup": "arn:aws:iam::aws:policy/service-role/AWSBackupServiceRolePolicyForBackup",
    "restore": "arn:aws:iam::aws:policy/service-role/AWSBackupServiceRolePolicyForRestores",
    "s3-backup": "arn:aws:iam::aws:policy/AWSBackupServiceRolePolicyForS3Backup",
    "s3-restore": "arn:aws:iam::aws:policy/AWSBackupServiceRolePolicyForS3Restore",
}


@dataclass(frozen=True)
class BackupsArgs:
    settings: BackupSettings
    kms_key_arn: pulumi.Input[str]
    resource_arns: Sequence[pulumi.Input[str]]


class Backups(Tier):
    """AWS Backup: an encrypted vault and a daily plan over the database and buckets."""

    TIER = "backup"

    vault_name: pulumi.Output[str]
    plan_id: pulumi.Output[str]

    def __init__(self, stack: str, tags: dict[str, str], args: BackupsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(stack, tags, opts)
        vault = aws.backup.Vault(
            self.name_of("vault"),
            name=self.name_of("vault"),
            kms_key_arn=args.kms_key_arn,
            tags=self.tagged("vault"),
            opts=self.child,
        )
        plan = aws.backup.Plan(
            self.name_of("daily"),
            name=self.name_of("daily"),
            rules=[
                {
                    "rule_name": "daily",
                    "target_vault_name": vault.name,
                    "schedule": "cron(0 5 * * ? *)",
                    "start_window": 60,
                    "completion_window": 360,
                    "lifecycle": {"delete_after": args.settings.retention_days},
                    "recovery_point_tags": self.tagged("recovery-point"),
                }
            ],
            tags=self.tagged("daily"),
            opts=self.child,
        )
        role = aws.iam.Role(
            self.name_of("role"),
            assume_role_policy=assume_role_policy("backup.amazonaws.com"),
            tags=self.tagged("role"),
            opts=self.child,
        )
        for role_name, policy_arn in BACKUP_ROLE_POLICIES.items():
            aws.iam.RolePolicyAttachment(
                self.name_of(f"role-{role_name}"), role=role.name, policy_arn=policy_arn, opts=self.child
            )
        aws.backup.Selection(
            self.name_of("selection"),
            name=self.name_of("selection"),
            plan_id=plan.id,
            iam_role_arn=role.arn,
            resources=args.resource_arns,
            opts=self.child,
        )
        self.vault_name = vault.name
        self.plan_id = plan.id
        self.register_outputs({"vault_name": self.vault_name, "plan_id": self.plan_id})
