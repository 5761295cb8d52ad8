"""The AWS FIS experiment templates (infra/fault_injection.py) over every stack file, under Pulumi's mocks.

The mocks accept any value, so each rule of FIS, IAM and EventBridge Scheduler is written down here with where it
comes from: the FIS API's own model (botocore's copy, the API the provider calls), the FIS user guide's actions
reference and targets page, the FIS quotas, and the Service Authorization Reference.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import botocore.session
import pytest
from botocore.validate import ParamValidator
from infra_helpers import NO_CLUSTER, as_list, policy, rendered

from drills.catalog import AWS, BY_NAME, DRILLS
from infra.fault_injection import ALARM_SOURCE, START_EXPERIMENT, STOP_CONDITIONS_MAX, STOP_ON, iso_duration
from pynomaly_cli.offline import ACCOUNT, PLACEHOLDERS, Rendering, Resource
from pynomaly_cli.plan import fis_rows
from pynomaly_ops import outputs as keys
from pynomaly_ops import settings as stack_settings
from pynomaly_ops.alarms import SERVICE_DOWN, Alarm, Target, catalogue, for_target
from pynomaly_ops.baselines import Baselines
from pynomaly_ops.outputs import StackOutputs

TEMPLATE = "aws:fis/experimentTemplate:ExperimentTemplate"
SCHEDULE = "aws:scheduler/schedule:Schedule"
METRIC_ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
FIS = botocore.session.get_session().get_service_model("fis")
SCHEDULER = botocore.session.get_session().get_service_model("scheduler")
FIS_QUOTA_STOP_CONDITIONS = 5  # Service Quotas, FIS "Stop conditions per experiment template" (L-872EC72B)
# dev with the templates and without the cluster: no node group, so no node-drain.
FIS_NO_CLUSTER = {"pynomaly:fis.enabled": True, **NO_CLUSTER}


@dataclass(frozen=True)
class Action:
    """A FIS action as the FIS user guide's actions reference gives it."""

    target_key: str
    resource_type: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    permissions: tuple[str, ...]


ACTIONS = {
    "aws:ec2:terminate-instances": Action(
        "Instances", "aws:ec2:instance", (), (), ("ec2:TerminateInstances", "ec2:DescribeInstances")
    ),
    "aws:rds:reboot-db-instances": Action(
        "DBInstances",
        "aws:rds:db",
        (),
        ("forceFailover",),
        ("rds:RebootDBInstance", "rds:DescribeDBInstances", "tag:GetResources"),
    ),
    # Renamed from aws:elasticache:interrupt-cluster-az-power ("migrate to the new action").
    "aws:elasticache:replicationgroup-interrupt-az-power": Action(
        "ReplicationGroups",
        "aws:elasticache:replicationgroup",
        ("duration",),
        (),
        ("elasticache:InterruptClusterAzPower", "elasticache:DescribeReplicationGroups", "tag:GetResources"),
    ),
    "aws:eks:terminate-nodegroup-instances": Action(
        "Nodegroups",
        "aws:eks:nodegroup",
        ("instanceTerminationPercentage",),
        (),
        ("ec2:DescribeInstances", "ec2:TerminateInstances", "eks:DescribeNodegroup", "tag:GetResources"),
    ),
    "aws:eks:pod-delete": Action(
        "Pods",
        "aws:eks:pod",
        ("kubernetesServiceAccount",),
        (
            "gracePeriodSeconds",
            "maxErrorsPercent",
            "fisPodContainerImage",
            "fisPodLabels",
            "fisPodAnnotations",
            "fisPodSecurityPolicy",
        ),
        ("eks:DescribeCluster", "ec2:DescribeSubnets", "tag:GetResources"),
    ),
}
# Which drill is which action (the drill names are drills/catalog.py's).
DRILL_ACTIONS = {
    "instance-loss": "aws:ec2:terminate-instances",
    "database-failover": "aws:rds:reboot-db-instances",
    "cache-failover": "aws:elasticache:replicationgroup-interrupt-az-power",
    "node-drain": "aws:eks:terminate-nodegroup-instances",
    "pod-loss": "aws:eks:pod-delete",
}
# Resource parameters a target type takes (FIS user guide, "Targets": resource parameters), required ones first.
TARGET_PARAMETERS = {
    "aws:elasticache:replicationgroup": (("availabilityZoneIdentifier",), ()),
    "aws:rds:db": ((), ("availabilityZoneIdentifiers",)),
    "aws:eks:pod": (
        ("clusterIdentifier", "namespace", "selectorType", "selectorValue"),
        ("availabilityZoneIdentifier", "targetContainerName"),
    ),
}
# Target types named by their resource parameters only, never by ARNs or tags (FIS user guide, "Use the AWS FIS
# aws:eks:pod actions": limitations).
BY_PARAMETERS = {"aws:eks:pod"}
# The Kubernetes RBAC the aws:eks:pod actions need in the target namespace (FIS user guide, "Use the AWS FIS
# aws:eks:pod actions", configure the Kubernetes service account): (API group, resource) -> verbs.
FIS_POD_RBAC = {
    ("", "configmaps"): {"get", "create", "patch", "delete"},
    ("", "pods"): {"create", "list", "get", "delete", "deletecollection"},
    ("", "pods/ephemeralcontainers"): {"update"},
    ("", "pods/exec"): {"create"},
    ("apps", "deployments"): {"get"},
}
FIS_POD_USER = "fis-experiment"  # the username the guide maps the experiment role to and binds the Role to
ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"
ACCESS_ENTRY = "aws:eks/accessEntry:AccessEntry"
# The Service Authorization Reference: the resource types each action the roles use can be limited to; none means
# the action takes "*" only. (The same as the copy cfn-lint ships, data/AdditionalSpecs/Policies.json.)
RESOURCE_TYPES: dict[str, tuple[str, ...]] = {
    "ec2:TerminateInstances": ("instance",),
    "ec2:DescribeInstances": (),
    "rds:RebootDBInstance": ("db",),
    "rds:DescribeDBInstances": ("db",),
    "elasticache:InterruptClusterAzPower": ("replicationgroup",),
    "elasticache:DescribeReplicationGroups": ("replicationgroup",),
    "eks:DescribeNodegroup": ("nodegroup",),
    "eks:DescribeCluster": ("cluster",),
    "ec2:DescribeSubnets": (),
    "tag:GetResources": (),
    "cloudwatch:DescribeAlarms": ("alarm",),
    "logs:CreateLogDelivery": (),
    "logs:PutResourcePolicy": (),
    "logs:DescribeResourcePolicies": (),
    "logs:DescribeLogGroups": (),
    "fis:StartExperiment": ("experiment", "experiment-template"),
}
# The program's resource for what a FIS target type names.
PULUMI_TYPES = {
    "aws:rds:db": "aws:rds/instance:Instance",
    "aws:elasticache:replicationgroup": "aws:elasticache/replicationGroup:ReplicationGroup",
    "aws:eks:nodegroup": "aws:eks/nodeGroup:NodeGroup",
}


def templates(r: Rendering) -> dict[str, dict[str, Any]]:
    """The templates' inputs by drill."""
    return {t.plain_inputs["tags"]["Drill"]: t.plain_inputs for t in r.of_type(TEMPLATE)}


def expected_drills(cfg: stack_settings.StackSettings) -> list[str]:
    if not cfg.fis.enabled:
        return []
    needs = {"node-drain": cfg.cluster.enabled, "pod-loss": cfg.cluster.declares_kubernetes}
    return [d for d in stack_settings.FIS_DRILLS if needs.get(d, True)]


def api_request(t: dict[str, Any]) -> dict[str, Any]:
    """The CreateExperimentTemplate request the provider makes of a template's inputs (maps where Pulumi has lists)."""
    pairs = lambda items: {p["key"]: p["value"] for p in items or []}  # noqa: E731
    target_fields = ("resourceType", "resourceArns", "filters", "selectionMode", "parameters")
    log = t["logConfiguration"]
    return {
        "clientToken": "offline",
        "description": t["description"],
        "roleArn": t["roleArn"],
        "stopConditions": t["stopConditions"],
        "targets": {
            x["name"]: {
                **{k: x[k] for k in target_fields if k in x},
                **({"resourceTags": pairs(x["resourceTags"])} if "resourceTags" in x else {}),
            }
            for x in t["targets"]
        },
        "actions": {
            a["name"]: {
                "actionId": a["actionId"],
                "parameters": pairs(a.get("parameters")),
                "targets": {a["target"]["key"]: a["target"]["value"]},
            }
            for a in t["actions"]
        },
        "tags": t["tags"],
        "logConfiguration": {
            "logSchemaVersion": int(log["logSchemaVersion"]),
            "cloudWatchLogsConfiguration": {"logGroupArn": log["cloudwatchLogsConfiguration"]["logGroupArn"]},
        },
        "experimentOptions": t["experimentOptions"],
    }


def role_documents(r: Rendering, role: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A role's trust policy and its inline policy."""
    role_resource = r.named(f"{r.stack}-fis-{role}")
    (access,) = [p for p in r.of_type(ROLE_POLICY) if p.name == f"{r.stack}-fis-{role}-access"]
    assert access.plain_inputs["role"] == f"{role_resource.name}-id"
    return policy(role_resource.plain_inputs, "assumeRolePolicy"), policy(access.plain_inputs)


def cloudwatch_alarms(numbers: Baselines) -> dict[str, Alarm]:
    """The catalogue's CloudWatch alarms by key."""
    return {a.key: a for a in for_target(catalogue(numbers), Target.CLOUDWATCH)}


@pytest.fixture(scope="module")
def without_cluster() -> Rendering:
    return rendered("dev", FIS_NO_CLUSTER)


# ------------------------------------------------------------------ which templates


def test_templates_only_where_enabled_one_per_drill_and_exported(r, cfg):
    drills = expected_drills(cfg)
    assert sorted(templates(r)) == sorted(drills)
    exported = r.outputs.get(keys.FIS_EXPERIMENT_TEMPLATES)
    if not drills:
        assert exported is None and not r.of_type(SCHEDULE)
        return
    by_drill = {t.plain_inputs["tags"]["Drill"]: t for t in r.of_type(TEMPLATE)}
    assert exported == {d: f"{by_drill[d].name}-id" for d in drills}  # the ids `drill run --via fis` starts
    assert StackOutputs.model_validate(r.outputs).fis_experiment_templates == exported
    component = r.named(f"{r.stack}-fis-component")
    assert component.type == "pynomaly:fis:FaultInjection"
    assert {t.parent for t in r.of_type(TEMPLATE)} == {component.urn}


def test_without_the_cluster_there_is_no_node_drain(without_cluster):
    assert sorted(templates(without_cluster)) == sorted(["instance-loss", "database-failover", "cache-failover"])


def test_the_templates_are_the_catalogues_drills_with_their_procedures(r):
    """Named as drills/catalog.py names them, each description naming the drill's runbook procedure, and each a drill
    the runner can run on AWS too (`drill run NAME --target aws`)."""
    assert set(stack_settings.FIS_DRILLS) <= {d.name for d in DRILLS if AWS in d.targets}
    for drill, t in templates(r).items():
        assert f"drill {drill}:" in t["description"]
        assert f"Runbook: {BY_NAME[drill].procedure}." in t["description"], drill


# ------------------------------------------------------------------ the FIS API


def test_templates_keep_to_the_fis_api(r):
    """botocore's FIS model validates the request the provider makes (types, required members, no unknown member);
    the limits it leaves to the service are checked beside it."""
    shape = FIS.operation_model("CreateExperimentTemplate").input_shape
    most_arns = FIS.shape_for("ResourceArnList").metadata["max"]
    most_tags = FIS.shape_for("TagMap").metadata["max"]
    description_max = FIS.shape_for("ExperimentTemplateDescription").metadata["max"]
    for drill, t in templates(r).items():
        request = api_request(t)
        report = ParamValidator().validate(request, shape)
        assert not report.has_errors(), f"{drill}: {report.generate_report()}"
        assert len(request["description"]) <= description_max
        assert (
            request["experimentOptions"]["emptyTargetResolutionMode"] in FIS.shape_for("EmptyTargetResolutionMode").enum
        )
        for target in request["targets"].values():
            named_by = {"resourceArns", "resourceTags"} & set(target)
            assert len(named_by) == (0 if target["resourceType"] in BY_PARAMETERS else 1), "ARNs or tags, never both"
            assert len(target.get("resourceArns", [])) <= most_arns and len(target.get("resourceTags", {})) <= most_tags
        assert len(request["tags"]) <= most_tags


def test_each_action_as_the_fis_actions_reference_gives_it(r, cfg, numbers):
    for drill, t in templates(r).items():
        (action,) = t["actions"]
        (target,) = t["targets"]
        spec = ACTIONS[action["actionId"]]
        assert action["actionId"] == DRILL_ACTIONS[drill]
        assert action["target"] == {"key": spec.target_key, "value": target["name"]}
        assert target["resourceType"] == spec.resource_type
        given = {p["key"] for p in action.get("parameters") or []}
        assert set(spec.required) <= given <= set(spec.required + spec.optional), drill
        required, optional = TARGET_PARAMETERS.get(target["resourceType"], ((), ()))
        assert set(required) <= set(target.get("parameters") or {}) <= set(required + optional), drill


def test_the_drills_parameters(r, cfg, numbers):
    """database-failover fails over (forceFailover; Multi-AZ is required for it, and a stack with FIS keeps it);
    cache-failover cuts the power for the cache failover's RTO (at least FIS's one minute); node-drain takes one
    node of the group at its minimum size, the percentage rounded down as FIS rounds a PERCENT(n) selection."""
    found = templates(r)
    params = {d: {p["key"]: p["value"] for p in t["actions"][0].get("parameters") or []} for d, t in found.items()}
    if "database-failover" in found:
        assert params["database-failover"] == {"forceFailover": "true"} and cfg.db.multi_az
    if "cache-failover" in found:
        rto_s = numbers.recovery.cache_failover.rto_s
        assert params["cache-failover"] == {"duration": iso_duration(rto_s, "rto")}
        assert iso_duration(60, "") == "PT1M" and iso_duration(90.5, "") == "PT91S"
    if "node-drain" in found:
        pct = int(params["node-drain"]["instanceTerminationPercentage"])
        assert 1 <= pct <= 100 and math.floor(cfg.cluster.node_min * pct / 100) == 1
    if "pod-loss" in found:  # the FIS pod runs under the Pod Security level the namespace enforces
        account = r.named(f"{r.stack}-workload-fis-account").plain_inputs["metadata"]
        namespace = r.named(f"{r.stack}-workload-namespace").plain_inputs["metadata"]
        assert params["pod-loss"] == {
            "kubernetesServiceAccount": account["name"],
            "fisPodSecurityPolicy": namespace["labels"]["pod-security.kubernetes.io/enforce"],
        }
        assert account["namespace"] == namespace["name"]
    with pytest.raises(ValueError, match="one minute"):
        iso_duration(59, "recovery.cache_failover.rto_s")


# ------------------------------------------------------------------ targets: this stack's resources only


def _tagged(r: Rendering, type_token: str, tags: dict[str, str]) -> list[Resource]:
    return [x for x in r.of_type(type_token) if tags.items() <= (x.plain_inputs.get("tags") or {}).items()]


def test_targets_name_this_stacks_resources_only(r):
    """Every target is ARNs of this rendering's resources, or tags that exactly one of this stack's resources of
    the type carries; never a wildcard."""
    stack = r.stack
    for drill, t in templates(r).items():
        (target,) = t["targets"]
        assert "*" not in json.dumps(target), drill
        kind = target["resourceType"]
        if "resourceArns" in target:
            arns = {x.state["arn"] for x in r.of_type(PULUMI_TYPES[kind])}
            assert target["resourceArns"] and set(target["resourceArns"]) <= arns, drill
            assert target["resourceArns"] == [r.named(f"{stack}-database-primary").state["arn"]]
            continue
        if kind == "aws:eks:pod":
            check_pod_target(r, target)
            continue
        tags = {p["key"]: p["value"] for p in target["resourceTags"]}
        if kind == "aws:ec2:instance":  # the fleet's running instances, by the tag EC2 Auto Scaling gives them
            assert tags == {"aws:autoscaling:groupName": r.named(f"{stack}-fleet-asg").plain_inputs["name"]}
            assert target["filters"] == [{"path": "State.Name", "values": ["running"]}]
            assert target["selectionMode"] == "COUNT(1)"
            continue
        assert tags["Environment"] == stack and tags["Name"].startswith(f"{stack}-"), drill
        (only,) = _tagged(r, PULUMI_TYPES[kind], tags)
        assert only.name == tags["Name"], drill


def check_pod_target(r: Rendering, target: dict[str, Any]) -> None:
    """This stack's cluster and namespace, the active colour's API pods (the PDB's selector), and one of them: the
    HPA keeps at least pods_min, so the PDB's pods_min - 1 stay up."""
    p = target["parameters"]
    assert p["clusterIdentifier"] == r.named(f"{r.stack}-cluster-eks").plain_inputs["name"]
    assert p["namespace"] == r.outputs[keys.WORKLOAD_NAMESPACE]
    assert p["selectorType"] == "labelSelector"
    pdb = r.named(f"{r.stack}-workload-pdb").plain_inputs["spec"]
    assert dict(pair.split("=") for pair in p["selectorValue"].split(",")) == pdb["selector"]["matchLabels"]
    assert target["selectionMode"] == "COUNT(1)"
    hpa = r.named(f"{r.stack}-workload-hpa").plain_inputs["spec"]
    assert hpa["minReplicas"] - 1 >= pdb["minAvailable"] >= 1


def test_the_cache_target_is_the_zone_of_the_groups_first_node(r):
    """availabilityZoneIdentifier takes an AZ ID or name; infra/cache.py puts node 1 (the primary at creation) in
    the stack's first zone."""
    cache = templates(r).get("cache-failover")
    if cache is None:
        return
    zone = cache["targets"][0]["parameters"]["availabilityZoneIdentifier"]
    assert zone == r.outputs[keys.AVAILABILITY_ZONE_IDS][0]
    group = r.named(f"{r.stack}-cache-redis").plain_inputs
    assert (
        group["multiAzEnabled"] is True
        and group["preferredCacheClusterAzs"][0] == r.outputs[keys.AVAILABILITY_ZONES][0]
    )


# ------------------------------------------------------------------ stop conditions


def test_stop_conditions_are_the_critical_alarms_users_feel(r, numbers):
    """Every template stops on the same critical CloudWatch alarms of the catalogue: the P0 pair and the p95,
    within FIS's quota; each one an alarm this stack declares, by its ARN."""
    assert STOP_CONDITIONS_MAX == FIS_QUOTA_STOP_CONDITIONS and len(STOP_ON) <= STOP_CONDITIONS_MAX
    assert set(SERVICE_DOWN) <= set(STOP_ON)
    alarms = cloudwatch_alarms(numbers)
    assert {alarms[key].severity for key in STOP_ON} == {"critical"}
    found = templates(r)
    if not found:
        return
    arns = [r.named(alarms[key].name(Target.CLOUDWATCH, r.stack)).state["arn"] for key in STOP_ON]
    expected = [{"source": ALARM_SOURCE, "value": arn} for arn in arns]
    source = FIS.shape_for("CreateExperimentTemplateStopConditionInput").members["source"].documentation
    assert ALARM_SOURCE in source
    for drill, t in found.items():
        assert t["stopConditions"] == expected, drill
    by_arn = {a.state["arn"]: a.plain_inputs for a in r.of_type(METRIC_ALARM)}
    assert {by_arn[c["value"]]["tags"]["Severity"] for c in expected} == {"critical"}


# ------------------------------------------------------------------ IAM


def _statements(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc["Statement"]


def _scoped(resource: str, statement: dict[str, Any], stack: str) -> bool:
    """A resource of this stack: named by it, or a type's every resource narrowed by a tag only this stack's carry,
    or an experiment (FIS names each run itself, EXP...)."""
    if stack in resource:
        return True
    condition = json.dumps(statement.get("Condition", {}))
    if resource.endswith(":instance/*"):
        return f"{stack}-" in condition
    return resource == f"arn:aws:fis:us-east-1:{ACCOUNT}:experiment/*"


def check_role(doc: dict[str, Any], stack: str) -> set[str]:
    """Every action known to the Service Authorization Reference table, "*" only for actions that take no resource,
    every other resource this stack's. Returns the actions granted."""
    granted = set()
    for s in _statements(doc):
        assert s["Effect"] == "Allow"
        actions, resources = as_list(s["Action"]), as_list(s["Resource"])
        assert not any("*" in a for a in actions), s
        for action in actions:
            assert action in RESOURCE_TYPES, f"{action}: classify it in RESOURCE_TYPES (Service Authorization Ref.)"
            if "*" in resources:
                assert not RESOURCE_TYPES[action], f"{action} takes {RESOURCE_TYPES[action]}: scope it, not '*'"
        if "*" not in resources:
            assert all(_scoped(res, s, stack) for res in resources), s
        granted |= set(actions)
    return granted


def test_the_experiment_role_trusts_fis_for_this_account_and_is_scoped(r):
    found = templates(r)
    if not found:
        return
    trust, access = role_documents(r, "role")
    (statement,) = _statements(trust)
    assert statement["Principal"] == {"Service": "fis.amazonaws.com"} and statement["Action"] == "sts:AssumeRole"
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": ACCOUNT}
    assert statement["Condition"]["ArnLike"] == {"aws:SourceArn": f"arn:aws:fis:us-east-1:{ACCOUNT}:experiment/*"}
    assert {t["roleArn"] for t in found.values()} == {r.named(f"{r.stack}-fis-role").state["arn"]}
    granted = check_role(access, r.stack)
    for drill, t in found.items():  # each action's documented permissions, so the drill can run
        assert set(ACTIONS[t["actions"][0]["actionId"]].permissions) <= granted, drill


def test_the_role_terminates_only_this_stacks_instances(r):
    """ec2:TerminateInstances on instance/* narrowed by a tag: the fleet's group name, and the EKS cluster's name
    (EKS tags a managed node group's instances eks:cluster-name)."""
    if not templates(r):
        return
    _, access = role_documents(r, "role")
    terminate = [s for s in _statements(access) if "ec2:TerminateInstances" in as_list(s["Action"])]
    conditions = {k: v for s in terminate for k, v in s["Condition"]["StringEquals"].items()}
    assert conditions.pop("aws:ResourceTag/aws:autoscaling:groupName") == f"{r.stack}-fleet-asg"
    if "node-drain" in templates(r):
        assert conditions.pop("aws:ResourceTag/eks:cluster-name") == f"{r.stack}-cluster-eks"
    assert conditions == {}


def test_a_wildcard_for_an_action_that_takes_a_resource_is_refused():
    doc = {"Statement": [{"Effect": "Allow", "Action": ["rds:RebootDBInstance"], "Resource": "*"}]}
    with pytest.raises(AssertionError, match="scope it"):
        check_role(doc, "prod")
    other = {"Statement": [{"Effect": "Allow", "Action": ["ec2:TerminateInstances"], "Resource": "arn:aws:ec2:*"}]}
    with pytest.raises(AssertionError):
        check_role(other, "prod")


def test_experiments_log_to_an_encrypted_group(r):
    found = templates(r)
    if not found:
        return
    group = r.named(f"{r.stack}-fis-experiments")
    assert group.plain_inputs["kmsKeyId"] == r.named(f"{r.stack}-keys-logs").state["arn"]
    for t in found.values():
        log = t["logConfiguration"]
        assert int(log["logSchemaVersion"]) == 2
        assert log["cloudwatchLogsConfiguration"]["logGroupArn"] == f"{group.state['arn']}:*"


# ------------------------------------------------------------------ the schedule


def test_schedule_only_where_set_and_never_in_prod(r, cfg):
    schedules = r.of_type(SCHEDULE)
    assert bool(schedules) == bool(cfg.fis.schedule)
    if r.stack == "prod":
        assert not schedules and not cfg.fis.schedule
    if not schedules:
        return
    ids = r.outputs[keys.FIS_EXPERIMENT_TEMPLATES]
    shape = SCHEDULER.operation_model("CreateSchedule").input_shape
    start = FIS.operation_model("StartExperiment").input_shape
    needed = {m for m in start.required_members if not start.members[m].metadata.get("idempotencyToken")}
    _, access = role_documents(r, "scheduler")
    (grant,) = _statements(access)
    assert as_list(grant["Action"]) == ["fis:StartExperiment"]
    template_arns = sorted(f"arn:aws:fis:us-east-1:{ACCOUNT}:experiment-template/{i}" for i in ids.values())
    assert sorted(res for res in grant["Resource"] if "experiment-template/" in res) == template_arns
    check_role(access, r.stack)
    started = {}
    for schedule in schedules:
        i = schedule.plain_inputs
        target = i["target"]
        body = json.loads(target["input"])
        assert needed <= set(body) <= set(start.members)
        request = {
            "Name": i["name"],
            "GroupName": i["groupName"],
            "ScheduleExpression": i["scheduleExpression"],
            "ScheduleExpressionTimezone": i["scheduleExpressionTimezone"],
            "FlexibleTimeWindow": {"Mode": i["flexibleTimeWindow"]["mode"]},
            "Target": {
                "Arn": target["arn"],
                "RoleArn": target["roleArn"],
                "Input": target["input"],
                "RetryPolicy": {"MaximumRetryAttempts": int(target["retryPolicy"]["maximumRetryAttempts"])},
            },
        }
        report = ParamValidator().validate(request, shape)
        assert not report.has_errors(), report.generate_report()
        assert target["arn"] == START_EXPERIMENT and target["retryPolicy"]["maximumRetryAttempts"] == 0
        assert target["roleArn"] == r.named(f"{r.stack}-fis-scheduler").state["arn"]
        started[body["experimentTemplateId"]] = (i["scheduleExpression"], i["scheduleExpressionTimezone"])
    expected = {
        ids[drill]: (cfg.fis.schedule_for(n), cfg.fis.schedule_timezone) for n, drill in enumerate(expected_drills(cfg))
    }
    assert started == expected
    trust, _ = role_documents(r, "scheduler")
    (statement,) = _statements(trust)
    assert statement["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": ACCOUNT}


BAD_FIS_SETTINGS = [
    ("prod", {"pynomaly:fis.schedule": "cron(0 10 ? * TUE#2 *)"}, "fis.schedule", "must stay empty"),
    ("dev", {"pynomaly:fis.schedule": "cron(0 10 ? * TUE#2 *)"}, "fis.schedule", "needs fis.enabled"),
    ("staging", {"pynomaly:db.multi_az": False}, "fis.enabled", "needs db.multi_az"),
    ("staging", {"pynomaly:fis.schedule": "cron(0 10 * * TUE#2 *)"}, "fis.schedule", "exactly one of"),
    ("staging", {"pynomaly:fis.schedule": "0 10 * * 2"}, "fis.schedule", "not an EventBridge Scheduler cron"),
    ("staging", {"pynomaly:fis.schedule": "cron(*/5 10 ? * TUE#2 *)"}, "fis.schedule", "one time of day"),
    ("staging", {"pynomaly:fis.schedule": "cron(0 22 ? * TUE#2 *)"}, "fis.schedule_interval_minutes", "midnight"),
    ("staging", {"pynomaly:fis.schedule_timezone": "Mars/Olympus"}, "fis.schedule_timezone", "IANA"),
]


@pytest.mark.parametrize(("stack", "overrides", "key", "says"), BAD_FIS_SETTINGS)
def test_bad_fis_settings_are_refused_naming_the_key(stack, overrides, key, says):
    with pytest.raises(stack_settings.SettingsError) as refused:
        stack_settings.from_stack_file(stack, {**PLACEHOLDERS, **overrides})
    assert f"pynomaly:{key}:" in str(refused.value) and says in str(refused.value)


def test_the_schedule_starts_the_templates_one_after_another_in_its_time_zone():
    fis = stack_settings.from_stack_file(
        "staging",
        {
            **PLACEHOLDERS,
            "pynomaly:fis.schedule": "cron(30 9 ? * TUE#2 *)",
            "pynomaly:fis.schedule_interval_minutes": 45,
            "pynomaly:fis.schedule_timezone": "Europe/Berlin",
        },
    ).fis
    assert [fis.schedule_for(n) for n in range(4)] == [
        "cron(30 9 ? * TUE#2 *)",
        "cron(15 10 ? * TUE#2 *)",
        "cron(0 11 ? * TUE#2 *)",
        "cron(45 11 ? * TUE#2 *)",
    ]


# ------------------------------------------------------------------ plan


def test_plan_lists_each_template_with_its_target_and_stop_conditions(r, numbers):
    rows = {row["drill"]: row for row in fis_rows(r)}
    assert sorted(rows) == sorted(templates(r))
    names = [cloudwatch_alarms(numbers)[key].role for key in STOP_ON]  # as the alarm table names them
    for drill, row in rows.items():
        assert row["action"].startswith(DRILL_ACTIONS[drill])
        assert row["stop conditions"] == ", ".join(names)
        assert fnmatchcase(row["schedule"], "cron(*) *" if r.stack == "staging" else "by hand")


# ------------------------------------------------------------------ pod-loss: the cluster side


def test_pod_loss_rbac_and_access_entry_only_with_fis_and_the_workload(r, cfg):
    """The Role the FIS user guide lists, in the workload's namespace, bound to the service account the action names
    and to the user the experiment role's access entry maps it to; that entry has no access policy."""
    roles, bindings = r.of_type(ROLE), r.of_type(ROLE_BINDING)
    entries = [e for e in r.of_type(ACCESS_ENTRY) if e.name.startswith(f"{r.stack}-fis-")]
    if "pod-loss" not in expected_drills(cfg):
        assert not roles and not bindings and not entries
        return
    namespace = r.outputs[keys.WORKLOAD_NAMESPACE]
    (role,) = [x.plain_inputs for x in roles]
    (binding,) = [x.plain_inputs for x in bindings]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == namespace
    granted = {
        (g, res): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for res in rule["resources"]
    }
    assert granted == FIS_POD_RBAC and len(role["rules"]) == len(FIS_POD_RBAC)  # one rule each, as documented
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    account = r.named(f"{r.stack}-workload-fis-account").plain_inputs["metadata"]
    assert sorted(binding["subjects"], key=lambda x: x["kind"]) == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": namespace},
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": FIS_POD_USER},
    ]
    (entry,) = [e.plain_inputs for e in entries]
    assert entry["principalArn"] == r.named(f"{r.stack}-fis-role").state["arn"]
    assert entry["clusterName"] == r.named(f"{r.stack}-cluster-eks").plain_inputs["name"]
    assert (entry["type"], entry["userName"]) == ("STANDARD", FIS_POD_USER)
    assert entry["tags"]["Environment"] == r.stack
    policies = r.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
    assert entry["principalArn"] not in {x.plain_inputs["principalArn"] for x in policies}


def test_no_pod_loss_without_the_workload_on_the_cluster():
    """fis.enabled with the cluster but not yet its Kubernetes objects (phase one): node-drain, not pod-loss."""
    r = rendered("dev", {"pynomaly:fis.enabled": True, "pynomaly:cluster.kubernetes": False})
    assert "node-drain" in templates(r) and "pod-loss" not in templates(r)
    assert not r.of_type(ROLE) and not r.of_type(ROLE_BINDING)
    assert not [e for e in r.of_type(ACCESS_ENTRY) if e.name.startswith("dev-fis-")]
