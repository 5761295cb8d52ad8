"""Storage tier: S3 buckets for model artifacts and backups.

:func:`secure_bucket` is the one definition of a protected bucket (also used
for the ALB's access-log bucket): versioning, default encryption, all four
public-access blocks, BucketOwnerEnforced, a TLS-only bucket policy and a
lifecycle rule expiring noncurrent versions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.tier import Tier, deny_insecure_transport, policy_document
from pynomaly_ops.settings import Storage as StorageSettings

BUCKET_ROLES = ("artifacts", "backups")


@dataclass(frozen=True)
class SecureBucketArgs:
    noncurrent_version_days: int
    # None: SSE-S3 (AES256), for services that cannot write with SSE-KMS (ALB logs).
    kms_key_arn: pulumi.Input[str] | None = None
    expire_current_after_days: int | None = None
    # Extra bucket-policy statements; a callable receives the bucket ARN.
    extra_statements: Any = None
    force_destroy: bool = False
    depends_on: list[pulumi.Resource] = field(default_factory=list)


def bucket_name(tier: Tier, role: str, account_id: pulumi.Input[str]) -> pulumi.Output[str]:
    """Globally unique, stable: ``<stack>-<tier>-<role>-<account>``."""
    return pulumi.Output.concat(tier.name_of(role), "-", account_id)


def secure_bucket(
    owner: Tier, role: str, name: pulumi.Input[str], args: SecureBucketArgs
) -> tuple[aws.s3.Bucket, aws.s3.BucketPolicy]:
    opts = owner.child
    bucket = aws.s3.Bucket(
        owner.name_of(role), bucket=name, force_destroy=args.force_destroy, tags=owner.tagged(role), opts=opts
    )
    aws.s3.BucketVersioning(
        owner.name_of(f"{role}-versioning"),
        bucket=bucket.id,
        versioning_configuration={"status": "Enabled"},
        opts=opts,
    )
    sse: aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgsDict = (
        {"sse_algorithm": "aws:kms", "kms_master_key_id": args.kms_key_arn}
        if args.kms_key_arn is not None
        else {"sse_algorithm": "AES256"}
    )
    aws.s3.BucketServerSideEncryptionConfiguration(
        owner.name_of(f"{role}-encryption"),
        bucket=bucket.id,
        rules=[{"apply_server_side_encryption_by_default": sse, "bucket_key_enabled": args.kms_key_arn is not None}],
        opts=opts,
    )
    block = aws.s3.BucketPublicAccessBlock(
        owner.name_of(f"{role}-public-access-block"),
        bucket=bucket.id,
        block_public_acls=True,
        block_public_policy=True,
        ignore_public_acls=True,
        restrict_public_buckets=True,
        opts=opts,
    )
    aws.s3.BucketOwnershipControls(
        owner.name_of(f"{role}-ownership"),
        bucket=bucket.id,
        rule={"object_ownership": "BucketOwnerEnforced"},
        opts=opts,
    )
    rule: aws.s3.BucketLifecycleConfigurationRuleArgsDict = {
        "id": "expire-noncurrent-versions",
        "status": "Enabled",
        "filter": {"prefix": ""},
        "noncurrent_version_expiration": {"noncurrent_days": args.noncurrent_version_days},
        "abort_incomplete_multipart_upload": {"days_after_initiation": 7},
    }
    if args.expire_current_after_days:
        rule["expiration"] = {"days": args.expire_current_after_days}
    aws.s3.BucketLifecycleConfiguration(owner.name_of(f"{role}-lifecycle"), bucket=bucket.id, rules=[rule], opts=opts)
    objects = pulumi.Output.concat(bucket.arn, "/*")
    extra = args.extra_statements(bucket.arn) if args.extra_statements else []
    policy = aws.s3.BucketPolicy(
        owner.name_of(f"{role}-policy"),
        bucket=bucket.id,
        policy=policy_document(deny_insecure_transport([bucket.arn, objects], "s3:*"), *extra),
        # S3 refuses policy writes while the public-access block is being set.
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[block, *args.depends_on])),
    )
    return bucket, policy


@dataclass(frozen=True)
class StorageArgs:
    settings: StorageSettings
    account_id: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]


class Storage(Tier):
    TIER = "storage"

    artifacts_bucket: pulumi.Output[str]
    artifacts_bucket_arn: pulumi.Output[str]
    backups_bucket: pulumi.Output[str]
    backups_bucket_arn: pulumi.Output[str]

    def __init__(self, stack: str, tags: dict[str, str], args: StorageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(stack, tags, opts)
        buckets = {
            role: secure_bucket(
                self,
                role,
                bucket_name(self, role, args.account_id),
                SecureBucketArgs(args.settings.noncurrent_version_days, args.kms_key_arn),
            )[0]
            for role in BUCKET_ROLES
        }
        self.artifacts_bucket = buckets["artifacts"].bucket
        self.artifacts_bucket_arn = buckets["artifacts"].arn
        self.backups_bucket = buckets["backups"].bucket
        self.backups_bucket_arn = buckets["backups"].arn
        self.register_outputs(
            {
                "artifacts_bucket": self.artifacts_bucket,
                "artifacts_bucket_arn": self.artifacts_bucket_arn,
                "backups_bucket": self.backups_bucket,
                "backups_bucket_arn": self.backups_bucket_arn,
            }
        )
