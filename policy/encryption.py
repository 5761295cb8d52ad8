"""Encryption at rest and in transit."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping

from pulumi_policy import PolicyResource

from policy.buckets import is_access_log_bucket, settings_of
from policy.resource_types import (
    BUCKET,
    BUCKET_ENCRYPTION,
    BUCKET_POLICY,
    EKS_CLUSTER,
    KMS_KEY,
    LAUNCH_TEMPLATE,
    LISTENER,
    NODE_GROUP,
    QUEUE,
    RDS_INSTANCE,
    RDS_PARAMETER_GROUP,
    REPLICATION_GROUP,
)
from policy.rule import Problem, Props, Stack, linked_rule, referenced, resource_rule, truthy, typed_rule
from policy.stack import StackContext
from pynomaly_ops.settings import TLS12_POLICIES_PREFIX

KMS_ALGORITHMS = ("aws:kms", "aws:kms:dsse")
SSE_S3 = "AES256"
# ALB access-log delivery writes only to a bucket encrypted with S3-managed keys (SSE-S3): the AWS
# documentation of ALB access logs lists no other server-side encryption it supports.
ACCESS_LOGS_SSE_REASON = "ALB access-log delivery supports SSE-S3 (AES256) only"
FORCE_SSL = ("rds.force_ssl", "1")

# --- at rest -------------------------------------------------------------------------------------------------


@resource_rule("rds-storage-encrypted", "RDS storage is encrypted at rest", [RDS_INSTANCE])
def rds_storage_encrypted(props: Props, ctx: StackContext) -> Iterator[Problem]:
    if not truthy(props.get("storageEncrypted")):
        yield Problem(
            "storage_encrypted is not true: the database, its backups and snapshots are stored in the clear",
            "storage_encrypted=True with kms_key_id=<the database key> on the aws.rds.Instance (infra/database.py)",
        )


@resource_rule("elasticache-encrypted-at-rest", "ElastiCache data is encrypted at rest", [REPLICATION_GROUP])
def elasticache_at_rest(props: Props, ctx: StackContext) -> Iterator[Problem]:
    if not truthy(props.get("atRestEncryptionEnabled")):
        yield Problem(
            "at_rest_encryption_enabled is not true: snapshots and swapped data are stored in the clear",
            "at_rest_encryption_enabled=True with kms_key_id=<the cache key> (infra/cache.py)",
        )


def _algorithms(configs: list[PolicyResource]) -> list[str]:
    return [
        rule.get("applyServerSideEncryptionByDefault", {}).get("sseAlgorithm", "")
        for config in configs
        for rule in config.props.get("rules") or []
    ]


@linked_rule(
    "s3-sse-kms",
    f"Every S3 bucket is encrypted with KMS (SSE-KMS); ALB access-log buckets may use SSE-S3: {ACCESS_LOGS_SSE_REASON}",
    [BUCKET],
)
def s3_sse_kms(bucket: PolicyResource, stack: Stack, ctx: StackContext) -> Iterator[Problem]:
    algorithms = _algorithms(settings_of(bucket, stack, BUCKET_ENCRYPTION))
    if algorithms and all(a in KMS_ALGORITHMS for a in algorithms):
        return
    logs = is_access_log_bucket(bucket, stack)
    if logs and algorithms and all(a == SSE_S3 for a in algorithms):
        return  # the exception: ACCESS_LOGS_SSE_REASON
    found = ", ".join(algorithms) or "no BucketServerSideEncryptionConfiguration"
    yield Problem(
        f"not encrypted with KMS ({found})",
        "an aws.s3.BucketServerSideEncryptionConfiguration for the bucket with sse_algorithm='aws:kms' and "
        "kms_master_key_id=<the storage key> (infra/storage.py)"
        + (
            f"; as an ALB access-log bucket it may use sse_algorithm='{SSE_S3}' ({ACCESS_LOGS_SSE_REASON})"
            if logs
            else ""
        ),
    )


@resource_rule("sqs-sse", "SQS queues are encrypted at rest (SSE)", [QUEUE])
def sqs_sse(props: Props, ctx: StackContext) -> Iterator[Problem]:
    if not props.get("kmsMasterKeyId") and not truthy(props.get("sqsManagedSseEnabled")):
        yield Problem(
            "neither kms_master_key_id nor sqs_managed_sse_enabled is set: messages are stored in the clear",
            "kms_master_key_id=<the queue key> on the aws.sqs.Queue (infra/queues.py)",
        )


def _template_volumes(props: Props, ctx: StackContext) -> Iterator[Problem]:
    volumes = [m["ebs"] for m in props.get("blockDeviceMappings") or [] if m.get("ebs")]
    if not volumes:
        yield Problem(
            "declares no EBS volume, so the AMI's volumes are used as they are (encrypted only if the account "
            "encrypts by default)",
            "block_device_mappings=[{'device_name': ..., 'ebs': {'encrypted': 'true', ...}}] on the launch template",
        )
    elif not all(truthy(v.get("encrypted")) for v in volumes):
        yield Problem(
            "an EBS volume is not encrypted", "ebs={'encrypted': 'true'} in every block_device_mappings entry"
        )


def needs_launch_template(props: Props, ctx: StackContext) -> Iterator[Problem]:
    """A managed node group's volumes and instance metadata are set only through a launch template."""
    if not props.get("launchTemplate"):
        yield Problem(
            "has no launch template, so its nodes' volumes and instance metadata take the EKS defaults",
            "launch_template={'id': ..., 'version': ...} naming a launch template with encrypted EBS volumes and "
            "http_tokens='required' (infra/cluster.py)",
        )


ebs_encrypted = typed_rule(
    "ebs-encrypted",
    "EBS volumes of launch templates and EKS node groups are encrypted",
    {LAUNCH_TEMPLATE: _template_volumes, NODE_GROUP: needs_launch_template},
)


@resource_rule("eks-secrets-encrypted", "EKS encrypts Kubernetes secrets with a KMS key", [EKS_CLUSTER])
def eks_secrets_encrypted(props: Props, ctx: StackContext) -> Iterator[Problem]:
    configs = props.get("encryptionConfig") or []
    configs = [configs] if isinstance(configs, Mapping) else configs
    if not any("secrets" in (c.get("resources") or []) and (c.get("provider") or {}).get("keyArn") for c in configs):
        yield Problem(
            "Kubernetes secrets are not envelope-encrypted with a KMS key",
            "encryption_config={'resources': ['secrets'], 'provider': {'key_arn': <the cluster key>}} "
            "(infra/cluster.py)",
        )


@resource_rule("kms-key-rotation", "KMS keys rotate", [KMS_KEY])
def kms_key_rotation(props: Props, ctx: StackContext) -> Iterator[Problem]:
    symmetric = props.get("customerMasterKeySpec", "SYMMETRIC_DEFAULT") == "SYMMETRIC_DEFAULT"
    if symmetric and not truthy(props.get("enableKeyRotation")):
        yield Problem("automatic key rotation is off", "enable_key_rotation=True on the aws.kms.Key (infra/keys.py)")


# --- in transit ----------------------------------------------------------------------------------------------


@resource_rule(
    "elasticache-in-transit", "ElastiCache encrypts traffic (TLS) and requires an AUTH token", [REPLICATION_GROUP]
)
def elasticache_in_transit(props: Props, ctx: StackContext) -> Iterator[Problem]:
    if not truthy(props.get("transitEncryptionEnabled")):
        yield Problem(
            "transit_encryption_enabled is not true: clients talk to Redis in the clear",
            "transit_encryption_enabled=True (infra/cache.py)",
        )
    if not props.get("authToken"):
        yield Problem(
            "no AUTH token: any client that reaches the port may use Redis",
            "auth_token=<a random secret> (infra/cache.py)",
        )


@resource_rule("alb-https-tls12", "HTTPS listeners allow TLS 1.2 and newer only", [LISTENER])
def alb_https_tls12(props: Props, ctx: StackContext) -> Iterator[Problem]:
    if props.get("protocol") not in ("HTTPS", "TLS"):
        return
    policy = props.get("sslPolicy") or "the AWS default (TLS 1.0 and newer)"
    if not policy.startswith(TLS12_POLICIES_PREFIX):
        yield Problem(
            f"TLS policy {policy} allows versions older than 1.2",
            f"ssl_policy: one of {', '.join(p + '*' for p in TLS12_POLICIES_PREFIX)} (stack setting lb.ssl_policy)",
        )


@resource_rule("alb-http-redirects", "HTTP listeners only redirect to HTTPS", [LISTENER])
def alb_http_redirects(props: Props, ctx: StackContext) -> Iterator[Problem]:
    if props.get("protocol") != "HTTP":
        return
    actions = props.get("defaultActions") or []
    if not actions or any(
        a.get("type") != "redirect" or (a.get("redirect") or {}).get("protocol") != "HTTPS" for a in actions
    ):
        yield Problem(
            "serves plain HTTP instead of redirecting it",
            "default_actions=[{'type': 'redirect', 'redirect': {'protocol': 'HTTPS', 'port': '443', "
            "'status_code': 'HTTP_301'}}] (infra/load_balancer.py)",
        )


def denies_insecure_transport(document: str) -> bool:
    """A policy statement refusing every request made without TLS."""
    for s in json.loads(document).get("Statement", []):
        condition = (s.get("Condition") or {}).get("Bool") or {}
        if (
            s.get("Effect") == "Deny"
            and s.get("Principal") in ("*", {"AWS": "*"})
            and (str(condition.get("aws:SecureTransport")).lower() == "false")
        ):
            return True
    return False


@linked_rule("s3-deny-insecure-transport", "Every S3 bucket's policy denies requests made without TLS", [BUCKET])
def s3_deny_insecure_transport(bucket: PolicyResource, stack: Stack, ctx: StackContext) -> Iterator[Problem]:
    policies = settings_of(bucket, stack, BUCKET_POLICY)
    if not any(denies_insecure_transport(p.props.get("policy") or "{}") for p in policies):
        yield Problem(
            "its bucket policy does not deny requests made without TLS",
            "an aws.s3.BucketPolicy with a Deny statement for Principal '*' on the bucket and its objects under "
            "Condition {'Bool': {'aws:SecureTransport': 'false'}} (infra/tier.py deny_insecure_transport)",
        )


@linked_rule("rds-force-ssl", "RDS instances refuse connections without TLS (rds.force_ssl)", [RDS_INSTANCE])
def rds_force_ssl(instance: PolicyResource, stack: Stack, ctx: StackContext) -> Iterator[Problem]:
    groups = referenced(instance, "parameterGroupName", RDS_PARAMETER_GROUP)
    parameters = [(p.get("name"), str(p.get("value"))) for g in groups for p in g.props.get("parameters") or []]
    if FORCE_SSL not in parameters:
        yield Problem(
            "its parameter group does not set rds.force_ssl=1, so clients may connect without TLS",
            "an aws.rds.ParameterGroup with {'name': 'rds.force_ssl', 'value': '1'} as the instance's "
            "parameter_group_name (infra/database.py)",
        )
