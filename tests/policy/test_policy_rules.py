"""Each rule of the pack with a passing and a failing resource, through its validate function (policy/engine.py
builds the arguments the Pulumi engine would), and what a preview's unknown values do to a rule."""

from __future__ import annotations

import json
import re

import pytest
from policy_helpers import found, judge, rec
from pulumi_policy.proxy import UNKNOWN_BOOLEAN_VALUE, UNKNOWN_STRING_VALUE

from policy import advisory, encryption, exposure, instances, observability, resilience, tagging
from policy.pack import POLICIES
from policy.resilience import MIN_BACKUP_DAYS
from policy.resource_types import (
    ASG,
    BUCKET,
    BUCKET_ENCRYPTION,
    BUCKET_POLICY,
    BUCKET_PUBLIC_ACCESS_BLOCK,
    BUCKET_VERSIONING,
    COMPOSITE_ALARM,
    EC2_INSTANCE,
    EKS_CLUSTER,
    FLOW_LOG,
    KMS_KEY,
    LAUNCH_TEMPLATE,
    LISTENER,
    LOAD_BALANCER,
    METRIC_ALARM,
    NODE_GROUP,
    QUEUE,
    RDS_INSTANCE,
    RDS_PARAMETER_GROUP,
    REPLICATION_GROUP,
    SECURITY_GROUP,
    SECURITY_GROUP_INGRESS_RULE,
    SUBNET,
    VPC,
)
from pynomaly_cli.offline import PLACEHOLDERS
from pynomaly_ops import REPO_ROOT, baselines
from pynomaly_ops.settings import from_stack_file

TAGS = from_stack_file("prod", PLACEHOLDERS).tags
SNS = "arn:aws:sns:us-east-1:123456789012:prod-alarms-warning"
TEMPLATE = {"launchTemplate": {"id": "lt-id", "version": "1"}}

# (rule, resource type, passing inputs, failing inputs): the failing resource is the one violation.
RESOURCE_CASES = [
    (encryption.rds_storage_encrypted, RDS_INSTANCE, {"storageEncrypted": True}, {"storageEncrypted": False}),
    (encryption.elasticache_at_rest, REPLICATION_GROUP, {"atRestEncryptionEnabled": True}, {}),
    (encryption.sqs_sse, QUEUE, {"kmsMasterKeyId": "arn:aws:kms:us-east-1:1:key/k"}, {}),
    (encryption.sqs_sse, QUEUE, {"sqsManagedSseEnabled": True}, {"sqsManagedSseEnabled": False}),
    (
        encryption.ebs_encrypted,
        LAUNCH_TEMPLATE,
        {"blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"encrypted": "true"}}]},
        {"blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"encrypted": "false"}}]},
    ),
    (encryption.ebs_encrypted, LAUNCH_TEMPLATE, {"blockDeviceMappings": [{"ebs": {"encrypted": True}}]}, {}),
    (encryption.ebs_encrypted, NODE_GROUP, TEMPLATE, {"diskSize": 50}),
    (
        encryption.eks_secrets_encrypted,
        EKS_CLUSTER,
        {"encryptionConfig": {"resources": ["secrets"], "provider": {"keyArn": "arn:aws:kms:us-east-1:1:key/k"}}},
        {"encryptionConfig": {"resources": ["secrets"], "provider": {}}},
    ),
    (encryption.kms_key_rotation, KMS_KEY, {"enableKeyRotation": True}, {"enableKeyRotation": False}),
    (
        encryption.elasticache_in_transit,
        REPLICATION_GROUP,
        {"transitEncryptionEnabled": True, "authToken": "a-long-random-token"},
        {"transitEncryptionEnabled": True},
    ),
    (
        encryption.alb_https_tls12,
        LISTENER,
        {"protocol": "HTTPS", "sslPolicy": "ELBSecurityPolicy-TLS13-1-2-2021-06"},
        {"protocol": "HTTPS", "sslPolicy": "ELBSecurityPolicy-2016-08"},
    ),
    (
        encryption.alb_http_redirects,
        LISTENER,
        {"protocol": "HTTP", "defaultActions": [{"type": "redirect", "redirect": {"protocol": "HTTPS"}}]},
        {"protocol": "HTTP", "defaultActions": [{"type": "forward", "targetGroupArn": "arn:aws:lb:tg"}]},
    ),
    (exposure.rds_not_public, RDS_INSTANCE, {"publiclyAccessible": False}, {"publiclyAccessible": True}),
    (
        exposure.no_public_ip,
        LAUNCH_TEMPLATE,
        {"networkInterfaces": [{"associatePublicIpAddress": "false"}]},
        {"networkInterfaces": [{"associatePublicIpAddress": "true"}]},
    ),
    (exposure.no_public_ip, EC2_INSTANCE, {}, {"associatePublicIpAddress": True}),
    (exposure.no_public_ip, SUBNET, {"mapPublicIpOnLaunch": False}, {"mapPublicIpOnLaunch": True}),
    # EKS turns the public endpoint on (for 0.0.0.0/0) unless told otherwise.
    (exposure.eks_public_endpoint, EKS_CLUSTER, {"vpcConfig": {"endpointPublicAccess": False}}, {"vpcConfig": {}}),
    (
        instances.imdsv2_required,
        LAUNCH_TEMPLATE,
        {"metadataOptions": {"httpTokens": "required"}},
        {"metadataOptions": {"httpTokens": "optional"}},
    ),
    (instances.imdsv2_required, EC2_INSTANCE, {"metadataOptions": {"httpTokens": "required"}}, {}),
    (instances.imdsv2_required, NODE_GROUP, TEMPLATE, {}),
    (resilience.rds_multi_az, RDS_INSTANCE, {"multiAz": True}, {"multiAz": False}),
    (resilience.rds_multi_az, RDS_INSTANCE, {"replicateSourceDb": "prod-database-primary"}, {}),  # a replica: n/a
    (resilience.rds_deletion_protection, RDS_INSTANCE, {"deletionProtection": True}, {"deletionProtection": False}),
    (
        resilience.rds_backups,
        RDS_INSTANCE,
        {"backupRetentionPeriod": float(MIN_BACKUP_DAYS)},
        {"backupRetentionPeriod": float(MIN_BACKUP_DAYS - 1)},
    ),
    (
        resilience.elasticache_failover,
        REPLICATION_GROUP,
        {"automaticFailoverEnabled": True, "multiAzEnabled": True},
        {"automaticFailoverEnabled": True},
    ),
    (resilience.alb_deletion_protection, LOAD_BALANCER, {"enableDeletionProtection": True}, {}),
    (observability.alarm_actions, METRIC_ALARM, {"alarmActions": [SNS]}, {"alarmActions": []}),
    (
        observability.alarm_actions,
        COMPOSITE_ALARM,
        {"alarmActions": [SNS]},
        {"alarmActions": [SNS], "actionsEnabled": False},
    ),
    (
        observability.alb_access_logs,
        LOAD_BALANCER,
        {"accessLogs": {"enabled": True, "bucket": "prod-lb-access-logs"}},
        {"accessLogs": {"enabled": False, "bucket": "prod-lb-access-logs"}},
    ),
    (tagging.project_tags, KMS_KEY, {"tags": {**TAGS, "Name": "k"}}, {"tags": {**TAGS, "Owner": "someone-else"}}),
    (
        tagging.project_tags,
        ASG,
        {"tags": [{"key": k, "value": v, "propagateAtLaunch": True} for k, v in TAGS.items()]},
        {"tags": [{"key": "Project", "value": "pynomaly", "propagateAtLaunch": True}]},
    ),
    (advisory.rds_performance_insights, RDS_INSTANCE, {"performanceInsightsEnabled": True}, {}),
    (advisory.rds_enhanced_monitoring, RDS_INSTANCE, {"monitoringInterval": 15.0}, {"monitoringInterval": 0.0}),
]


def case_id(case) -> str:
    return f"{case[0].name}:{case[1].rsplit(':', 1)[-1]}"


@pytest.mark.parametrize(
    ("rule", "resource_type", "passing", "failing"), RESOURCE_CASES, ids=map(case_id, RESOURCE_CASES)
)
def test_resource_rule_passes_and_fails(rule, resource_type, passing, failing):
    assert found(judge(rule, rec(resource_type, "good", passing))) == []
    outcome = judge(rule, rec(resource_type, "bad", failing))
    assert found(outcome) == [(rule.name, "bad")]
    (violation,) = outcome.violations
    assert violation.message.startswith("bad: ") and ". Fix: " in violation.message, violation.message


def _bucket_with(settings_type: str, name: str, props: dict) -> list:
    bucket = rec(BUCKET, name)
    return [bucket, rec(settings_type, f"{name}-settings", props, {"bucket": [bucket]})]


def _encrypted(algorithm: str) -> dict:
    return {"rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": algorithm}}]}


def _bucket_policy(effect: str) -> dict:
    statement = {"Effect": effect, "Principal": "*", "Action": "s3:*", "Resource": "*"}
    return {
        "policy": json.dumps({"Statement": [{**statement, "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]})
    }


def _blocks(on: int) -> dict:
    return dict(zip(exposure.PUBLIC_ACCESS_BLOCKS, [True] * on + [False] * (4 - on), strict=True))


def _force_ssl(parameters: list) -> list:
    group = rec(RDS_PARAMETER_GROUP, "params", {"parameters": parameters})
    return [group, rec(RDS_INSTANCE, "db", {}, {"parameterGroupName": [group]})]


def _world_on(port: int, with_alb: bool) -> list:
    rule = {
        "protocol": "tcp",
        "fromPort": port,
        "toPort": port,
        "cidrBlocks": ["0.0.0.0/0"],
        "ipv6CidrBlocks": ["::/0"],
    }
    group = rec(SECURITY_GROUP, "sg", {"ingress": [rule]})
    return [group, *([rec(LOAD_BALANCER, "alb", {}, {"securityGroups": [group]})] if with_alb else [])]


def _fleet(zones: list[str], min_size: int) -> list:
    subnets = [rec(SUBNET, f"app-{i}", {"availabilityZoneId": z}) for i, z in enumerate(zones)]
    return [*subnets, rec(ASG, "asg", {"minSize": float(min_size)}, {"vpcZoneIdentifiers": subnets})]


def _queues() -> list:
    dlq = rec(QUEUE, "jobs-dlq")
    policy = json.dumps({"deadLetterTargetArn": "arn:aws:sqs:us-east-1:1:jobs-dlq", "maxReceiveCount": 5})
    return [dlq, rec(QUEUE, "jobs", {"redrivePolicy": policy}, {"redrivePolicy": [dlq]})]


def _vpc(logged: bool) -> list:
    vpc = rec(VPC, "vpc")
    return [vpc, *([rec(FLOW_LOG, "flow-log", {"trafficType": "ALL"}, {"vpcId": [vpc]})] if logged else [])]


NORMAL = baselines.load().scaling.instances_normal
# (rule, passing stack, failing stack, the violations of the failing one)
STACK_CASES = [
    (encryption.s3_sse_kms, _bucket_with(BUCKET_ENCRYPTION, "b", _encrypted("aws:kms")), [rec(BUCKET, "b")], ["b"]),
    (
        encryption.s3_sse_kms,
        _bucket_with(BUCKET_ENCRYPTION, "b", _encrypted("aws:kms")),
        _bucket_with(BUCKET_ENCRYPTION, "b", _encrypted("AES256")),
        ["b"],
    ),
    (
        encryption.s3_deny_insecure_transport,
        _bucket_with(BUCKET_POLICY, "b", _bucket_policy("Deny")),
        _bucket_with(BUCKET_POLICY, "b", _bucket_policy("Allow")),
        ["b"],
    ),
    (encryption.rds_force_ssl, _force_ssl([{"name": "rds.force_ssl", "value": "1"}]), _force_ssl([]), ["db"]),
    (
        exposure.s3_public_access_block,
        _bucket_with(BUCKET_PUBLIC_ACCESS_BLOCK, "b", _blocks(4)),
        _bucket_with(BUCKET_PUBLIC_ACCESS_BLOCK, "b", _blocks(3)),
        ["b"],
    ),
    # The internet on 443 only to the group a load balancer uses; the same group on no load balancer, or on 22, fails.
    (exposure.sg_no_world_ingress, _world_on(443, with_alb=True), _world_on(443, with_alb=False), ["sg"]),
    (exposure.sg_no_world_ingress, _world_on(80, with_alb=True), _world_on(22, with_alb=True), ["sg"]),
    (
        resilience.asg_capacity,
        _fleet(["use1-az1", "use1-az2", "use1-az4"], NORMAL),
        _fleet(["use1-az1", "use1-az1", "use1-az2"], NORMAL - 1),
        ["asg", "asg"],  # two AZs, and fewer than the normal fleet
    ),
    (resilience.sqs_dead_letter_queues, _queues(), [rec(QUEUE, "jobs")], ["jobs"]),  # a DLQ needs no DLQ
    (
        resilience.s3_versioning,
        _bucket_with(BUCKET_VERSIONING, "b", {"versioningConfiguration": {"status": "Enabled"}}),
        _bucket_with(BUCKET_VERSIONING, "b", {"versioningConfiguration": {"status": "Suspended"}}),
        ["b"],
    ),
    (advisory.vpc_flow_logs, _vpc(logged=True), _vpc(logged=False), ["vpc"]),
]


@pytest.mark.parametrize(("rule", "passing", "failing", "violators"), STACK_CASES, ids=[c[0].name for c in STACK_CASES])
def test_stack_rule_passes_and_fails(rule, passing, failing, violators):
    assert found(judge(rule, *passing)) == []
    assert found(judge(rule, *failing)) == [(rule.name, v) for v in violators]


def test_every_rule_has_a_passing_and_a_failing_case():
    """The alarm catalogue's cases need a whole stack: tests/policy/test_policy_stacks.py."""
    covered = {c[0].name for c in RESOURCE_CASES + STACK_CASES} | {observability.alarm_catalogue.name}
    assert covered == {p.name for p in POLICIES}


def test_the_alb_access_log_bucket_may_use_sse_s3_and_only_it():
    logs = _bucket_with(BUCKET_ENCRYPTION, "logs", _encrypted("AES256"))
    alb = rec(LOAD_BALANCER, "alb", {"accessLogs": {"enabled": True}}, {"accessLogs": [logs[0]]})
    other = _bucket_with(BUCKET_ENCRYPTION, "data", _encrypted("AES256"))
    outcome = judge(encryption.s3_sse_kms, *logs, alb, *other)
    assert found(outcome) == [("s3-sse-kms", "data")]
    assert encryption.ACCESS_LOGS_SSE_REASON in encryption.s3_sse_kms.description


def test_world_ingress_through_a_rule_resource_is_caught_too():
    group = rec(SECURITY_GROUP, "app-sg")
    ssh = rec(
        SECURITY_GROUP_INGRESS_RULE,
        "ssh",
        {"cidrIpv4": "0.0.0.0/0", "ipProtocol": "tcp", "fromPort": 22, "toPort": 22},
        {"securityGroupId": [group]},
    )
    (violation,) = judge(exposure.sg_no_world_ingress, group, ssh).violations
    assert violation.resource == "ssh" and "0.0.0.0/0 on ports 22-22" in violation.message


def test_production_rules_apply_to_a_stack_named_prod_only():
    bad = {"multiAz": False, "deletionProtection": False, "backupRetentionPeriod": 1.0}
    for rule in (resilience.rds_multi_az, resilience.rds_deletion_protection, resilience.rds_backups):
        assert found(judge(rule, rec(RDS_INSTANCE, "db", bad, stack="staging"))) == []
        assert found(judge(rule, rec(RDS_INSTANCE, "db", bad, stack="prod"))) == [(rule.name, "db")]


def test_levels_mandatory_but_the_advisory_three():
    levels = {p.name: p.enforcement_level.value for p in POLICIES}
    advisory_rules = {"rds-performance-insights", "rds-enhanced-monitoring", "vpc-flow-logs"}
    assert {n for n, level in levels.items() if level == "advisory"} == advisory_rules
    assert {level for n, level in levels.items() if n not in advisory_rules} == {"mandatory"}


def test_an_unknown_value_is_not_a_violation():
    """In a preview a value computed from another resource may be unknown: the rule is not run on it."""
    outcome = judge(
        encryption.rds_storage_encrypted, rec(RDS_INSTANCE, "db", {"storageEncrypted": UNKNOWN_BOOLEAN_VALUE})
    )
    assert outcome.violations == []
    assert outcome.not_run == [
        "rds-storage-encrypted on db: boolean value at .storageEncrypted can't be known during preview"
    ]


def test_an_unknown_value_skips_only_its_subject_in_a_stack_rule():
    unknown = _bucket_with(BUCKET_ENCRYPTION, "pending", _encrypted(UNKNOWN_STRING_VALUE))
    outcome = judge(encryption.s3_sse_kms, *unknown, rec(BUCKET, "bare"))
    assert found(outcome) == [("s3-sse-kms", "bare")]


def test_the_readme_lists_every_rule_with_its_level():
    rows = re.findall(
        r"^\| `([a-z0-9-]+)` \| (mandatory|advisory)", (REPO_ROOT / "policy" / "README.md").read_text(), re.M
    )
    assert dict(rows) == {p.name: p.enforcement_level.value for p in POLICIES}
