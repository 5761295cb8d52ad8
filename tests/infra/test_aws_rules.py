"""Rules of AWS, the provider and the charts that Pulumi's mocks cannot see (issue 16), over every stack's rendering.

The mocks accept any value, so each test encodes the service's own rule, with where it is written down. A test
fails on the program that broke the rule (each was run against the code before its fix).
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import botocore.session
import pytest
import yaml
from infra_helpers import as_list, policy, rendered, rid

from infra.load_balancer import WAF_LIMIT_RANGE, WAF_WINDOWS_S
from pynomaly_cli.offline import Rendering, Resource

RDS_INSTANCE = "aws:rds/instance:Instance"
METRIC_ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
COMPOSITE_ALARM = "aws:cloudwatch/compositeAlarm:CompositeAlarm"


def by_state(r: Rendering, type_token: str, key: str, value: Any) -> Resource:
    (found,) = [x for x in r.of_type(type_token) if x.state.get(key) == value]
    return found


def allows(doc: dict[str, Any], action: str, resource: str) -> bool:
    """Whether an identity policy's Allow statements grant ``action`` on ``resource`` (wildcards as IAM reads them)."""
    return any(
        s["Effect"] == "Allow"
        and any(fnmatchcase(action, a) for a in as_list(s["Action"]))
        and any(fnmatchcase(resource, x) for x in as_list(s["Resource"]))
        for s in doc["Statement"]
    )


# ------------------------------------------------------------------ RDS


def test_a_same_region_read_replica_names_no_kms_key(r):
    """CreateDBInstanceReadReplica, KmsKeyId: "If you create an encrypted read replica in the same AWS Region as the
    source DB instance ..., don't specify a value for this parameter. A read replica in the same AWS Region is always
    encrypted with the same KMS key as the source" (the API answers InvalidParameterCombination, "Your request does
    not require the KMS key parameter", cloudposse/terraform-aws-rds-replica#5). A source named by identifier, not
    by ARN, is in the same region."""
    replicas = [x for x in r.of_type(RDS_INSTANCE) if x.plain_inputs.get("replicateSourceDb")]
    for replica in replicas:
        i = replica.plain_inputs
        assert not i["replicateSourceDb"].startswith("arn:"), "a cross-region replica would need its region's key"
        assert "kmsKeyId" not in i, f"{replica.name}: a same-region replica must not name a KMS key"
        # ...and it is still encrypted: its source is, with the stack's database key.
        source = by_state(r, RDS_INSTANCE, "identifier", i["replicateSourceDb"]).plain_inputs
        assert source["storageEncrypted"] is True and source["kmsKeyId"]


def test_free_storage_alarms_follow_the_size_rds_reports(r, stack):
    """pulumi-aws rds.Instance maxAllocatedStorage: "When configured, changes to allocatedStorage will be
    automatically ignored as the storage can dynamically scale"; RDS grows the volume when free space is at most
    10 % (RDS User Guide, "Managing capacity automatically with Amazon RDS storage autoscaling"). A threshold
    computed from db.allocated_storage_gb then no longer means 85 % or 95 %: it must come from the instance's
    reported allocated storage (so the alarm depends on the instance)."""
    alarms = [x for x in r.of_type(METRIC_ALARM) if x.plain_inputs.get("metricName") == "FreeStorageSpace"]
    assert alarms
    for alarm in alarms:
        ident = alarm.plain_inputs["dimensions"]["DBInstanceIdentifier"]
        instance = by_state(r, RDS_INSTANCE, "identifier", ident)
        assert instance.urn in alarm.dependencies, f"{alarm.name}: threshold not taken from {ident}'s size"
        assert instance.plain_inputs.get("maxAllocatedStorage"), f"{ident} does not autoscale its storage"


def test_each_final_snapshot_has_its_own_identifier(r, stack):
    """DeleteDBInstance, FinalDBSnapshotIdentifier: "must be 1 to 255 letters, numbers, or hyphens; first character
    must be a letter; can't end with a hyphen or contain two consecutive hyphens", and the snapshot outlives the
    instance (DBSnapshotAlreadyExists on a second destroy with the same name). The identifier must come from a
    value made per instance lifetime (a random resource), not be fixed."""
    for instance in r.of_type(RDS_INSTANCE):
        i = instance.plain_inputs
        if i.get("skipFinalSnapshot"):
            continue
        name = i["finalSnapshotIdentifier"]
        assert re.fullmatch(r"[A-Za-z](?!.*--)[A-Za-z0-9-]{0,254}", name) and not name.endswith("-"), name
        randoms = {x.urn for x in r.resources if x.type.startswith("random:")}
        assert randoms & set(instance.dependencies), f"{instance.name}: fixed final snapshot identifier {name}"


# ------------------------------------------------------------------ Secrets Manager


def test_secrets_with_a_fixed_name_are_deleted_without_a_recovery_window(r):
    """DeleteSecret: without ForceDeleteWithoutRecovery the secret is only scheduled for deletion (7-30 days,
    30 by default: pulumi-aws secretsmanager.Secret recoveryWindowInDays), and CreateSecret of the same name
    meanwhile fails ("You can't create this secret because a secret with this name is already scheduled for
    deletion"). A secret the program names itself is re-made on a redeploy, so it goes at once (0)."""
    secrets = r.of_type("aws:secretsmanager/secret:Secret")
    assert secrets
    for secret in secrets:
        i = secret.plain_inputs
        if i.get("name"):
            assert i.get("recoveryWindowInDays") == 0, f"{secret.name}: redeploy within 30 days would fail"


# ------------------------------------------------------------------ VPC flow logs

# VPC User Guide, "IAM role for publishing flow logs to CloudWatch Logs": the role's policy must allow these.
FLOW_LOG_ACTIONS = (
    "logs:CreateLogGroup",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "logs:DescribeLogGroups",
    "logs:DescribeLogStreams",
)


def test_flow_log_role_has_every_permission_aws_requires(r):
    (flow_log,) = r.of_type("aws:ec2/flowLog:FlowLog")
    f = flow_log.plain_inputs
    assert f["logDestinationType"] == "cloud-watch-logs"
    role = by_state(r, "aws:iam/role:Role", "arn", f["iamRoleArn"])
    docs = [
        policy(p.plain_inputs)
        for p in r.of_type("aws:iam/rolePolicy:RolePolicy")
        if p.plain_inputs["role"] == rid(role.name)
    ]
    group, stream = f["logDestination"], f"{f['logDestination']}:log-stream:eni-0-all"
    for action in FLOW_LOG_ACTIONS:
        target = stream if action in ("logs:CreateLogStream", "logs:PutLogEvents") else group
        assert any(allows(d, action, target) for d in docs), f"the flow-log role lacks {action}"


# ------------------------------------------------------------------ maintenance mode

# Metrics an ALB publishes only for a target group that serves a listener, or for traffic that reached a target.
TARGET_METRICS = ("HealthyHostCount", "UnHealthyHostCount", "TargetResponseTime", "HTTPCode_Target_*")


def _metrics(alarm: Resource) -> list[dict[str, Any]]:
    i = alarm.plain_inputs
    if i.get("metricName"):
        return [{"namespace": i["namespace"], "metricName": i["metricName"]}]
    return [q["metric"] for q in i["metricQueries"] if q.get("metric")]


def _silent_in_maintenance(alarm: Resource) -> bool:
    """Whether every metric of the alarm stops being published while no listener forwards to the targets."""
    return all(
        m["namespace"] == "AWS/ApplicationELB" and any(fnmatchcase(m["metricName"], t) for t in TARGET_METRICS)
        for m in _metrics(alarm)
    )


def _in_alarm_without_data(r: Rendering) -> set[str]:
    """Alarms that go to ALARM when their metrics stop (CloudWatch: treatMissingData "breaching")."""
    return {
        a.plain_inputs["name"]
        for a in r.of_type(METRIC_ALARM)
        if _silent_in_maintenance(a) and a.plain_inputs.get("treatMissingData") == "breaching"
    }


def _composites_firing(r: Rendering, in_alarm: set[str]) -> list[str]:
    return [
        c.name
        for c in r.of_type(COMPOSITE_ALARM)
        if set(re.findall(r'ALARM\("([^"]+)"\)', c.plain_inputs["alarmRule"])) & in_alarm
    ]


def test_maintenance_mode_pages_nobody_and_changes_nothing_else(dev_variant):
    """lb.maintenance_mode: the HTTPS listener answers a fixed 503 and nothing forwards to the target group, so its
    per-target-group metrics (HealthyHostCount, ...) are not published; CloudWatch then evaluates each alarm by its
    treatMissingData ("breaching" counts missing points as over the threshold: CloudWatch User Guide, "Configuring
    how CloudWatch alarms treat missing data"). A planned maintenance must not page: no alarm nor the composite
    "service down" may go to ALARM for the missing data maintenance causes; every other alarm stays as it was."""
    normal = rendered("dev")
    listeners = dev_variant.of_type("aws:lb/listener:Listener")
    tg_arn = dev_variant.named("dev-lb-app").state["arn"]
    assert not any(tg_arn in str(x.plain_inputs["defaultActions"]) for x in listeners)  # the premise
    assert _composites_firing(dev_variant, _in_alarm_without_data(dev_variant)) == []
    assert _in_alarm_without_data(dev_variant) == set()
    # Outside maintenance a fleet that stops reporting is still an outage that pages.
    assert "dev-alarms-no-healthy-hosts-critical" in _in_alarm_without_data(normal)
    assert _composites_firing(normal, _in_alarm_without_data(normal)) == ["dev-alarms-service-down"]
    # Nothing else changes: the same alarms, the same inputs, but how the silenced ones treat missing data.
    before = {a.name: a.plain_inputs for a in normal.of_type(METRIC_ALARM)}
    after = {a.name: a.plain_inputs for a in dev_variant.of_type(METRIC_ALARM)}
    assert set(before) == set(after)
    for name, inputs in after.items():
        silenced = _silent_in_maintenance(dev_variant.named(name))
        drop = {"treatMissingData"} if silenced else set()
        assert {k: v for k, v in inputs.items() if k not in drop} == {
            k: v for k, v in before[name].items() if k not in drop
        }, name
    assert [c.plain_inputs for c in dev_variant.of_type(COMPOSITE_ALARM)] == [
        c.plain_inputs for c in normal.of_type(COMPOSITE_ALARM)
    ]


# ------------------------------------------------------------------ Cluster Autoscaler

AUTOSCALER_TABLE = Path(__file__).parents[2] / "infra" / "cluster-autoscaler-versions.yaml"
# kubernetes/autoscaler#9244, #10278: from 1.35 the autoscaler locks dynamic resource allocation on and, at
# startup, lists and watches these; without RBAC for them it blocks while its health check still answers 200.
DRA_FROM = (1, 35)
DRA_RESOURCES = {"deviceclasses", "resourceslices", "resourceclaims"}


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.removeprefix("v").split(".")[:2]
    return int(major), int(minor)


def _table() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(AUTOSCALER_TABLE.read_text())


def test_autoscaler_table_pairs_each_chart_with_its_own_minor_and_rbac():
    """The shipped table (sources in the file): each chart's appVersion is of the cluster minor it is listed for,
    and a chart listed for an autoscaler from 1.35 on is one whose ClusterRole grants resource.k8s.io (9.54.0+,
    kubermatic/kubermatic#16252)."""
    table = _table()
    assert table
    for cluster, row in table.items():
        assert _minor(str(row["app_version"])) == _minor(cluster), (cluster, row)
        if _minor(cluster) >= DRA_FROM:
            assert row["dra_rbac"] is True and _version(row["chart"]) >= (9, 54, 0), (cluster, row)


def _version(v: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in str(v).split("."))


def test_autoscaler_chart_image_and_cluster_agree(r, cfg):
    """The release installs the chart the table lists for the cluster's minor, running that chart's own image; the
    image's minor is the cluster's (cluster-autoscaler README, "Releases"); from 1.35 the chart grants DRA RBAC."""
    (release,) = [
        x.plain_inputs
        for x in r.of_type("kubernetes:helm.sh/v3:Release")
        if x.plain_inputs["chart"] == "cluster-autoscaler"
    ]
    row = _table()[cfg.cluster.version]
    tag = release["values"]["image"]["tag"]
    assert release["version"] == str(row["chart"]), "the chart is not the one listed for this cluster version"
    assert tag == f"v{row['app_version']}", "the image is not the chart's appVersion"
    assert _minor(tag) == _minor(cfg.cluster.version)
    if _minor(tag) >= DRA_FROM:
        assert row["dra_rbac"], f"chart {release['version']} cannot run autoscaler {tag}: no {sorted(DRA_RESOURCES)}"


def test_a_cluster_version_without_a_known_chart_is_refused_before_anything_is_declared():
    from infra.cluster_addons import autoscaler_release

    with pytest.raises(
        ValueError, match=r"cluster\.version 1\.31: no Cluster Autoscaler chart .*cluster\.node_autoscaler false"
    ):
        autoscaler_release("1.31")


# ------------------------------------------------------------------ CloudWatch Logs


def test_every_log_group_is_encrypted_with_the_logs_key(r, stack, cfg):
    """Log groups hold request paths, errors and (EKS) the API server's audit trail: each is encrypted with the
    logs key, whose policy lets CloudWatch Logs use it for this account's log groups only (infra/keys.py). EKS
    writes its control-plane logs to the group the program creates first, ``/aws/eks/<cluster>/cluster``."""
    key = r.named(f"{stack}-keys-logs").state["arn"]
    groups = r.of_type("aws:cloudwatch/logGroup:LogGroup")
    assert groups
    assert {g.name: g.plain_inputs.get("kmsKeyId") for g in groups if g.plain_inputs.get("kmsKeyId") != key} == {}
    eks = [g for g in groups if str(g.plain_inputs.get("name", "")).startswith("/aws/eks/")]
    assert len(eks) == (1 if cfg.cluster.enabled else 0)


# ------------------------------------------------------------------ WAF

# The WAFV2 API's own model (botocore's copy, the API the provider calls).
WAFV2 = botocore.session.get_session().get_service_model("wafv2")
WEB_ACL = "aws:wafv2/webAcl:WebAcl"
DEFAULT_WINDOW_S = 300  # RateBasedStatement.EvaluationWindowSec "Default: 300"
ACL_ANNOTATION = "alb.ingress.kubernetes.io/wafv2-acl-arn"
# What the AWS Load Balancer Controller calls to apply that annotation (its docs/install/iam_policy.json grants
# them); AssociateWebACL also needs the protected resource's own permission, elasticloadbalancing:SetWebAcl for an
# ALB (WAF Developer Guide, "Permissions for AssociateWebACL").
CONTROLLER_WAF_ACTIONS = (
    "wafv2:GetWebACL",
    "wafv2:GetWebACLForResource",
    "wafv2:AssociateWebACL",
    "wafv2:DisassociateWebACL",
)


def _windows_in_the_model() -> tuple[int, ...]:
    doc = WAFV2.shape_for("RateBasedStatement").members["EvaluationWindowSec"].documentation
    found = re.search(r"Valid settings are ([\d, and]+)\.", doc)
    assert found, "the model no longer lists the valid windows"
    return tuple(int(n) for n in re.findall(r"\d+", found.group(1)))


def _rate_statements(r: Rendering) -> list[dict[str, Any]]:
    return [
        rule["statement"]["rateBasedStatement"]
        for acl in r.of_type(WEB_ACL)
        for rule in acl.plain_inputs["rules"]
        if "rateBasedStatement" in rule["statement"]
    ]


def test_rate_based_rules_keep_to_the_wafv2_api(r):
    """WAFV2 RateBasedStatement: Limit 10..2,000,000,000 requests per EvaluationWindowSec (60, 120, 300 or 600);
    CUSTOM_KEYS needs its custom keys (at most 5), and a header key a name (1-64 characters) and at least one text
    transformation. The mocks take any value; WAF refuses the web ACL."""
    limit = WAFV2.shape_for("RateLimit").metadata
    assert (limit["min"], limit["max"]) == WAF_LIMIT_RANGE
    assert _windows_in_the_model() == WAF_WINDOWS_S
    aggregate = WAFV2.shape_for("RateBasedStatement").members["AggregateKeyType"].enum
    most_keys = WAFV2.shape_for("RateBasedStatementCustomKeys").metadata["max"]
    name = WAFV2.shape_for("FieldToMatchData").metadata
    transformations = WAFV2.shape_for("TextTransformationType").enum
    statements = _rate_statements(r)
    assert statements
    for statement in statements:
        assert limit["min"] <= statement["limit"] <= limit["max"], statement
        assert statement.get("evaluationWindowSec", DEFAULT_WINDOW_S) in WAF_WINDOWS_S, statement
        assert statement["aggregateKeyType"] in aggregate
        keys = statement.get("customKeys") or []
        assert bool(keys) == (statement["aggregateKeyType"] == "CUSTOM_KEYS") and len(keys) <= most_keys
        for header in (key["header"] for key in keys):
            assert name["min"] <= len(header["name"]) <= name["max"]
            assert header["textTransformations"], "RateLimitHeader.TextTransformations: at least one"
            assert {t["type"] for t in header["textTransformations"]} <= set(transformations)


def test_the_load_balancer_controller_may_attach_the_ingress_web_acl(r, stack):
    """The Ingress names its web ACL by ARN, a regional one (the controller's annotations doc: "Only Regional WAFv2
    is supported"); the controller's role may make every call that takes, and the chart leaves the WAFv2 add-on on
    (``enableWafv2``, default true)."""
    acl = r.named(f"{stack}-workload-waf")
    assert acl.plain_inputs["scope"] == "REGIONAL"
    (ingress,) = r.of_type("kubernetes:networking.k8s.io/v1:Ingress")
    assert ingress.plain_inputs["metadata"]["annotations"][ACL_ANNOTATION] == acl.state["arn"]
    doc = policy(r.named(f"{stack}-addons-lb-controller-irsa-access").plain_inputs)
    for action in CONTROLLER_WAF_ACTIONS:
        assert allows(doc, action, acl.state["arn"]), action
    alb = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/k8s-pynomaly/0123456789abcdef"
    assert allows(doc, "elasticloadbalancing:SetWebAcl", alb)
    (controller,) = [x for x in r.of_type("kubernetes:helm.sh/v3:Release") if "load-balancer" in x.name]
    assert controller.plain_inputs["values"].get("enableWafv2", True) is True
