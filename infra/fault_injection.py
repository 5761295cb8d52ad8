"""Fault injection tier: AWS FIS experiment templates for the monthly drills (``fis.enabled``).

One template per drill, named after it (drills/catalog.py): ``instance-loss`` terminates one running instance of
the fleet's Auto Scaling group, ``database-failover`` reboots the RDS primary through a Multi-AZ failover,
``cache-failover`` cuts the power to the Redis nodes in the zone the group's primary starts in, ``node-drain``
(with the EKS cluster) terminates one node of the managed node group, and ``pod-loss`` (with the workload on it)
deletes one API pod of the active colour. Every target names this stack's resources (ARNs, tags that only this
stack's resources carry, or the cluster, namespace and labels of this stack's pods); every template stops on the
catalogue's critical alarms users feel (:data:`STOP_ON`) and runs as one role allowed exactly those resources;
experiments log to an encrypted log group. With ``fis.schedule``, EventBridge Scheduler starts the templates one
after another (never in prod).

``pod-loss`` (``aws:eks:pod-delete``) runs in the cluster as the Kubernetes user :data:`FIS_USER`, which an EKS
access entry maps the experiment role to; infra/workload.py declares the service account the action names and the
Role bound to both, in the workload's namespace (FIS user guide, "Use the AWS FIS aws:eks:pod actions").
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pulumi
import pulumi_aws as aws

from infra.cluster import Cluster
from infra.irsa import allow
from infra.pod_specs import RESTRICTED_NAMESPACE
from infra.tier import Tier, policy_document
from pynomaly_ops.alarms import STOP_ON, CatalogueError
from pynomaly_ops.baselines import Baselines
from pynomaly_ops.settings import FIS_DRILLS
from pynomaly_ops.settings import FaultInjection as FisSettings

# FIS allows 5 stop conditions per template (quota L-872EC72B, not adjustable); the catalogue has more critical
# CloudWatch alarms than that. A drill stops on what users feel: the P0 pair (SERVICE_DOWN: no healthy target, a
# critical error rate) and the critical p95 (STOP_ON); not on the capacity alarms a drill is expected to trip.
STOP_CONDITIONS_MAX = 5
ALARM_SOURCE = "aws:cloudwatch:alarm"
LOG_SCHEMA_VERSION = 2  # the current experiment log schema (FIS user guide, "Experiment logging")
# EventBridge Scheduler's universal target for FIS's StartExperiment (Scheduler user guide, "Universal targets").
START_EXPERIMENT = "arn:aws:scheduler:::aws-sdk:fis:startExperiment"
RUNNING = {"path": "State.Name", "values": ["running"]}
FIS_MIN_DURATION_S = 60  # action durations run from one minute to 12 hours
# The Kubernetes user of the experiment role (its EKS access entry's username), as the FIS user guide names it.
FIS_USER = "fis-experiment"
# The FIS pod's Pod Security Standards level: the one the workload's namespace enforces.
FIS_POD_SECURITY = RESTRICTED_NAMESPACE["pod-security.kubernetes.io/enforce"]


@dataclass(frozen=True)
class Nodes:
    """The EKS cluster's managed node group."""

    cluster: Cluster
    node_min: int  # the group's minimum size (cluster.node_min)


@dataclass(frozen=True)
class Pods:
    """The workload's API pods on the EKS cluster, and the service account FIS's pod actions run as."""

    cluster: Cluster
    namespace: pulumi.Input[str]
    selector: Mapping[str, str]  # the active colour's API pod labels (Workload.active_selector)
    service_account: pulumi.Input[str]  # Workload.fis_service_account


@dataclass(frozen=True)
class Targets:
    """This stack's resources the drills break."""

    asg_name: pulumi.Input[str]
    db_instance_arn: pulumi.Input[str]
    replication_group_id: str  # also the group's Name tag (Tier.tagged)
    zone_ids: pulumi.Input[list[str]]  # the stack's zones; infra/cache.py puts the group's first node in the first
    nodes: Nodes | None = None  # where the stack has its EKS cluster
    pods: Pods | None = None  # where the stack also declares the workload on it


@dataclass(frozen=True)
class FaultInjectionArgs:
    settings: FisSettings
    baselines: Baselines
    targets: Targets
    alarm_arns: Mapping[str, pulumi.Input[str]]  # catalogue key -> CloudWatch alarm ARN (Alarms.arns)
    region: str
    account_id: pulumi.Input[str]
    logs_kms_key_arn: pulumi.Input[str]


@dataclass(frozen=True)
class Template:
    """One drill as a FIS experiment template: an action on one target, and what the role needs for it."""

    drill: str
    procedure: str  # the runbook procedure it rehearses (drills/catalog.py)
    what: str
    action_id: str
    target_key: str  # the action's name for its target (FIS actions reference)
    target: dict[str, Any]  # resource_type, selection_mode, resource_arns or resource_tags, filters, parameters
    grants: list[dict[str, Any]]
    parameters: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)


def stop_alarms(alarm_arns: Mapping[str, pulumi.Input[str]]) -> list[pulumi.Input[str]]:
    """The ARNs of the :data:`STOP_ON` alarms, refused if the stack lacks one or FIS would take too many."""
    missing = [key for key in STOP_ON if key not in alarm_arns]
    if missing:
        raise CatalogueError(f"FIS stop conditions with no CloudWatch alarm: {', '.join(missing)}")
    if len(STOP_ON) > STOP_CONDITIONS_MAX:
        raise CatalogueError(f"FIS takes at most {STOP_CONDITIONS_MAX} stop conditions per template")
    return [alarm_arns[key] for key in STOP_ON]


def iso_duration(seconds: float, source: str) -> str:
    """An ISO 8601 duration for a FIS action (whole seconds, rounded up), refused under FIS's one-minute minimum."""
    whole = math.ceil(seconds)
    if whole < FIS_MIN_DURATION_S:
        raise ValueError(f"{source} ({seconds} s) is shorter than the one minute a FIS action lasts at least")
    return f"PT{whole // 60}M" if whole % 60 == 0 else f"PT{whole}S"


def _tags(pairs: Mapping[str, pulumi.Input[str]]) -> list[dict[str, pulumi.Input[str]]]:
    return [{"key": k, "value": v} for k, v in pairs.items()]


def _arn(service: str, region: str, account_id: pulumi.Input[str], resource: pulumi.Input[str]) -> pulumi.Output[str]:
    return pulumi.Output.concat("arn:aws:", service, ":", region, ":", account_id, ":", resource)


def _terminate_tagged(sid: str, instances: pulumi.Input[str], tag: str, value: pulumi.Input[str]) -> dict[str, Any]:
    """ec2:TerminateInstances on the instances carrying one tag value only."""
    return {
        **allow(["ec2:TerminateInstances"], [instances]),
        "Sid": sid,
        "Condition": {"StringEquals": {f"aws:ResourceTag/{tag}": value}},
    }


DESCRIBE_INSTANCES = {"Sid": "DescribeInstances", **allow(["ec2:DescribeInstances"], ["*"])}


class FaultInjection(Tier):
    TIER = "fis"

    template_ids: dict[str, pulumi.Output[str]]  # drill name -> experiment template id, the stack output
    role_arn: pulumi.Output[str]

    def __init__(
        self, stack: str, tags: dict[str, str], args: FaultInjectionArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__(stack, tags, opts)
        self.args = args
        templates = self._templates()
        stops = stop_alarms(args.alarm_arns)
        logs = aws.cloudwatch.LogGroup(
            self.name_of("experiments"),
            # Under /aws/vendedlogs/, the log delivery's resource policy covers the prefix once, not a group each.
            name=f"/aws/vendedlogs/fis/{stack}",
            retention_in_days=args.settings.log_retention_days,
            kms_key_id=args.logs_kms_key_arn,
            tags=self.tagged("experiments"),
            opts=self.child,
        )
        role = self._experiment_role(templates, stops)
        if args.targets.pods is not None:
            self._cluster_access(args.targets.pods.cluster, role)
        made = {t.drill: self._template(t, role, stops, logs) for t in templates}
        if args.settings.schedule:
            self._schedule(made)
        self.template_ids = {drill: template.id for drill, template in made.items()}
        self.role_arn = role.arn
        self.register_outputs({"template_ids": self.template_ids, "role_arn": self.role_arn})

    # -- the drills ---------------------------------------------------------------------------------------------

    def _templates(self) -> list[Template]:
        t = self.args.targets
        found = [self._instance_loss(), self._database_failover(), self._cache_failover()]
        if t.nodes is not None:
            found.append(self._node_drain(t.nodes))
        if t.pods is not None:
            found.append(self._pod_loss(t.pods))
        assert [x.drill for x in found] == list(FIS_DRILLS[: len(found)]), "in the order of FIS_DRILLS"
        return found

    def _instance_loss(self) -> Template:
        a = self.args
        group = "aws:autoscaling:groupName"  # EC2 Auto Scaling tags its instances with their group's name
        return Template(
            drill="instance-loss",
            procedure="000 Emergency Procedures (System Down); 002 Training and Drills (failure injection)",
            what="terminates one running instance of the fleet's Auto Scaling group, which replaces it",
            action_id="aws:ec2:terminate-instances",
            target_key="Instances",
            target={
                "resource_type": "aws:ec2:instance",
                "selection_mode": "COUNT(1)",
                "resource_tags": _tags({group: a.targets.asg_name}),
                "filters": [RUNNING],
            },
            grants=[
                _terminate_tagged("TerminateFleetInstance", self._ec2_instances(), group, a.targets.asg_name),
                DESCRIBE_INSTANCES,
            ],
        )

    def _database_failover(self) -> Template:
        arn = self.args.targets.db_instance_arn
        return Template(
            drill="database-failover",
            procedure="000 Emergency Procedures (Database Issues); 001 Disaster Recovery (RDS Multi-AZ failover)",
            what="reboots the RDS primary with forceFailover: the standby in another zone becomes the writer",
            action_id="aws:rds:reboot-db-instances",
            target_key="DBInstances",
            target={"resource_type": "aws:rds:db", "selection_mode": "ALL", "resource_arns": [arn]},
            parameters={"forceFailover": "true"},
            grants=[{"Sid": "RebootDatabase", **allow(["rds:RebootDBInstance", "rds:DescribeDBInstances"], [arn])}],
        )

    def _cache_failover(self) -> Template:
        a = self.args
        group_id = a.targets.replication_group_id
        rto_s = a.baselines.recovery.cache_failover.rto_s
        return Template(
            drill="cache-failover",
            procedure="000 Key System Components (ElastiCache Redis); 002 Training and Drills (failure injection)",
            what="cuts the power to the Redis nodes in the zone the primary starts in, for the failover's RTO",
            action_id="aws:elasticache:replicationgroup-interrupt-az-power",
            target_key="ReplicationGroups",
            # This resource type takes tags and a zone, not ARNs (FIS user guide, "Targets": resource parameters).
            target={
                "resource_type": "aws:elasticache:replicationgroup",
                "selection_mode": "ALL",
                "resource_tags": _tags(self._stack_tags(group_id)),
                "parameters": {
                    "availabilityZoneIdentifier": pulumi.Output.from_input(a.targets.zone_ids).apply(lambda z: z[0])
                },
            },
            parameters={"duration": iso_duration(rto_s, "recovery.cache_failover.rto_s")},
            grants=[
                {
                    "Sid": "InterruptCacheZonePower",
                    **allow(
                        ["elasticache:InterruptClusterAzPower", "elasticache:DescribeReplicationGroups"],
                        [_arn("elasticache", a.region, a.account_id, f"replicationgroup:{group_id}")],
                    ),
                }
            ],
        )

    def _node_drain(self, nodes: Nodes) -> Template:
        cluster = nodes.cluster
        # One node of the group at its minimum size; FIS rounds a percentage of targets down (FIS user guide,
        # "Targets": selection mode), so a little over 1/n takes one node of n.
        percentage = math.ceil(100 / nodes.node_min)
        return Template(
            drill="node-drain",
            procedure="001 Auto-scaling Configuration (pods reschedule); 002 Training and Drills (failure injection)",
            what=f"terminates {percentage} % of the EKS node group's instances (one node at its minimum size)",
            action_id="aws:eks:terminate-nodegroup-instances",
            target_key="Nodegroups",
            # The node group is tagged Name=<stack>-cluster-nodes (infra/cluster.py, self.tagged("nodes")).
            target={
                "resource_type": "aws:eks:nodegroup",
                "selection_mode": "ALL",
                "resource_tags": _tags(self._stack_tags(cluster.name_of("nodes"))),
            },
            parameters={"instanceTerminationPercentage": str(percentage)},
            grants=[
                # EKS tags a managed node group's instances with their cluster's name (eks:cluster-name).
                _terminate_tagged("TerminateNodeInstance", self._ec2_instances(), "eks:cluster-name", cluster.name),
                self._eks("DescribeNodeGroup", "eks:DescribeNodegroup", ("nodegroup/", cluster.name, "/*")),
                DESCRIBE_INSTANCES,
            ],
        )

    def _pod_loss(self, pods: Pods) -> Template:
        cluster = pods.cluster
        # One pod: the HPA keeps at least scaling.pods_min, the PDB pods_min - 1 (infra/workload.py), so the service
        # keeps what the PDB guarantees. FIS deletes pods (not evictions): the PDB does not hold it back by itself.
        pods_min = self.args.baselines.scaling.pods_min
        if pods_min < 2:
            raise ValueError(f"scaling.pods_min ({pods_min}): pod-loss would delete the service's only pod")
        # Pods are named by their cluster, namespace and a selector, never by ARNs or tags (FIS user guide,
        # "Use the AWS FIS aws:eks:pod actions": limitations); here the active colour's API pods, the PDB's.
        where = {
            "clusterIdentifier": cluster.name,
            "namespace": pods.namespace,
            "selectorType": "labelSelector",
            "selectorValue": ",".join(f"{k}={v}" for k, v in pods.selector.items()),
        }
        return Template(
            drill="pod-loss",
            procedure="001 Auto-scaling Configuration (HPA minimum, PDB); 002 Training and Drills (failure injection)",
            what=f"deletes one of the active colour's API pods (at least {pods_min}); its Deployment replaces it",
            action_id="aws:eks:pod-delete",
            target_key="Pods",
            target={"resource_type": "aws:eks:pod", "selection_mode": "COUNT(1)", "parameters": where},
            parameters={"kubernetesServiceAccount": pods.service_account, "fisPodSecurityPolicy": FIS_POD_SECURITY},
            grants=[
                self._eks("DescribeCluster", "eks:DescribeCluster", ("cluster/", cluster.name)),
                {"Sid": "DescribeSubnets", **allow(["ec2:DescribeSubnets"], ["*"])},
            ],
        )

    def _eks(self, sid: str, action: str, resource: tuple[pulumi.Input[str], ...]) -> dict[str, Any]:
        """``action`` on this account's EKS ``resource`` (its parts: ``cluster/<name>``, ``nodegroup/<cluster>/*``)."""
        a = self.args
        return {"Sid": sid, **allow([action], [_arn("eks", a.region, a.account_id, pulumi.Output.concat(*resource))])}

    def _cluster_access(self, cluster: Cluster, role: aws.iam.Role) -> None:
        """The experiment role in the cluster as :data:`FIS_USER`: an access entry with no access policy, so it may
        do what the workload's FIS Role grants that user in its namespace and nothing else."""
        aws.eks.AccessEntry(
            self.name_of("cluster-access"),
            cluster_name=cluster.name,
            principal_arn=role.arn,
            type="STANDARD",
            user_name=FIS_USER,
            tags=self.tagged("cluster-access"),
            opts=self.child,
        )

    def _stack_tags(self, name: str) -> dict[str, str]:
        """Tags only this stack's resource ``name`` carries."""
        return {"Project": self.tags["Project"], "Environment": self.tags["Environment"], "Name": name}

    def _ec2_instances(self) -> pulumi.Output[str]:
        return _arn("ec2", self.args.region, self.args.account_id, "instance/*")

    # -- the role and the templates -----------------------------------------------------------------------------

    def _trust(self, service: str, source_arn: pulumi.Input[str] | None = None) -> pulumi.Output[str]:
        """``service`` may assume the role on behalf of this account only (the confused-deputy guard)."""
        condition: dict[str, Any] = {"StringEquals": {"aws:SourceAccount": self.args.account_id}}
        if source_arn is not None:
            condition["ArnLike"] = {"aws:SourceArn": source_arn}
        return policy_document(
            {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole", "Condition": condition}
        )

    def _role(self, role: str, trust: pulumi.Output[str], statements: Sequence[dict[str, Any]]) -> aws.iam.Role:
        iam_role = aws.iam.Role(self.name_of(role), assume_role_policy=trust, tags=self.tagged(role), opts=self.child)
        aws.iam.RolePolicy(
            self.name_of(f"{role}-access"), role=iam_role.id, policy=policy_document(*statements), opts=self.child
        )
        return iam_role

    def _experiment_role(self, templates: list[Template], stops: list[pulumi.Input[str]]) -> aws.iam.Role:
        a = self.args
        grants = {g["Sid"]: g for t in templates for g in t.grants}  # shared grants once
        common = [
            {"Sid": "ReadStopConditions", **allow(["cloudwatch:DescribeAlarms"], stops)},
            # Resolving tagged targets, and delivering the experiment log (CloudWatch Logs' vended-log delivery):
            # none of these actions takes a resource (Service Authorization Reference).
            {"Sid": "ResolveTaggedTargets", **allow(["tag:GetResources"], ["*"])},
            {
                "Sid": "DeliverExperimentLogs",
                **allow(
                    [
                        "logs:CreateLogDelivery",
                        "logs:PutResourcePolicy",
                        "logs:DescribeResourcePolicies",
                        "logs:DescribeLogGroups",
                    ],
                    ["*"],
                ),
            },
        ]
        experiments = _arn("fis", a.region, a.account_id, "experiment/*")
        return self._role("role", self._trust("fis.amazonaws.com", experiments), [*grants.values(), *common])

    def _template(
        self, t: Template, role: aws.iam.Role, stops: list[pulumi.Input[str]], logs: aws.cloudwatch.LogGroup
    ) -> aws.fis.ExperimentTemplate:
        target_name = t.drill  # one target per template, named as its action
        description = (
            f"Pynomaly {self.stack}, drill {t.drill}: {t.what}. Runbook: {t.procedure}. "
            f"Stops on the alarms {', '.join(STOP_ON)}."
        )
        action: aws.fis.ExperimentTemplateActionArgsDict = {
            "name": t.drill,
            "action_id": t.action_id,
            "parameters": [{"key": k, "value": v} for k, v in t.parameters.items()],
            "target": {"key": t.target_key, "value": target_name},
        }
        target = cast(aws.fis.ExperimentTemplateTargetArgsDict, {"name": target_name, **t.target})
        stop_conditions: list[aws.fis.ExperimentTemplateStopConditionArgsDict] = [
            {"source": ALARM_SOURCE, "value": arn} for arn in stops
        ]
        # The destination must be the log group's ARN ending in ":*" (CreateExperimentTemplate, logGroupArn).
        log: aws.fis.ExperimentTemplateLogConfigurationArgsDict = {
            "log_schema_version": LOG_SCHEMA_VERSION,
            "cloudwatch_logs_configuration": {"log_group_arn": pulumi.Output.concat(logs.arn, ":*")},
        }
        return aws.fis.ExperimentTemplate(
            self.name_of(t.drill),
            description=description,
            role_arn=role.arn,
            actions=[action],
            targets=[target],
            stop_conditions=stop_conditions,
            log_configuration=log,
            # A target that resolves to nothing fails the experiment instead of passing it untried.
            experiment_options={"account_targeting": "single-account", "empty_target_resolution_mode": "fail"},
            tags=self.tagged(t.drill, Drill=t.drill),
            opts=self.child,
        )

    # -- the schedule -------------------------------------------------------------------------------------------

    def _schedule(self, made: dict[str, aws.fis.ExperimentTemplate]) -> None:
        """EventBridge Scheduler starts the templates one after another, as a role that may start only them."""
        a, s = self.args, self.args.settings
        templates = [
            _arn("fis", a.region, a.account_id, pulumi.Output.concat("experiment-template/", t.id))
            for t in made.values()
        ]
        experiments = _arn("fis", a.region, a.account_id, "experiment/*")
        role = self._role(
            "scheduler",
            self._trust("scheduler.amazonaws.com"),
            [{"Sid": "StartDrillExperiments", **allow(["fis:StartExperiment"], [*templates, experiments])}],
        )
        group = aws.scheduler.ScheduleGroup(
            self.name_of("schedules"), name=self.name_of("schedules"), tags=self.tagged("schedules"), opts=self.child
        )
        for i, (drill, template) in enumerate(made.items()):
            aws.scheduler.Schedule(
                self.name_of(f"{drill}-schedule"),
                name=self.name_of(f"{drill}-schedule"),
                group_name=group.name,
                description=f"Starts the FIS experiment template of the drill {drill} ({self.stack})",
                schedule_expression=s.schedule_for(i),
                schedule_expression_timezone=s.schedule_timezone,
                flexible_time_window={"mode": "OFF"},
                target={
                    "arn": START_EXPERIMENT,
                    "role_arn": role.arn,
                    # StartExperiment's request (the FIS API); the SDK fills its idempotency token, clientToken.
                    "input": template.id.apply(lambda tid: json.dumps({"experimentTemplateId": tid})),
                    # A drill that failed to start waits for the next month, not for Scheduler's 185 retries.
                    "retry_policy": {"maximum_retry_attempts": 0},
                },
                opts=self.child,
            )
