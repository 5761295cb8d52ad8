"""Alarms tier: the CloudWatch side of the alarm catalogue (pynomaly_ops/alarms.py).

Every catalogue entry for CloudWatch becomes one alarm on the metric :func:`watches` gives its signal,
with exactly the numbers file's value (converted only where the metric's unit differs: ms to s, percent
of a capacity to a count or bytes), named ``<stack>-alarms-<signal>-<severity>``. Each alarm notifies
the SNS topic of its severity; a composite "service down" alarm pages as P0 when any of the catalogue's
SERVICE_DOWN entries fires. An entry with no CloudWatch metric here is an error.

:func:`alarm_specs` is plain data; the dashboard draws the same specs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.app_fleet import (
    AGENT_NAMESPACE,
    APP_DIMENSION,
    APP_NAMESPACE,
    AUTH_FAILURES,
    AUTH_REQUESTS,
    INFERENCE_COUNT,
    INFERENCE_SUM,
    PROCESSING_LAG,
)
from infra.tier import Tier
from pynomaly_ops.alarms import (
    SERVICE_DOWN,
    SERVICE_DOWN_KEY,
    Alarm,
    CatalogueError,
    Target,
    catalogue,
    for_target,
    names_by_key,
)
from pynomaly_ops.baselines import SEVERITIES, Baselines, Severity
from pynomaly_ops.settings import Alarms as AlarmSettings

GIB = 1024**3
OPERATORS = {">": "GreaterThanThreshold", "<": "LessThanThreshold"}
PERIOD_S = 60


@dataclass(frozen=True)
class Metric:
    namespace: str
    name: str
    dimensions: Mapping[str, pulumi.Input[str]]
    stat: str  # Average, Maximum, Minimum, Sum or a percentile such as p95


def _same(value: float) -> pulumi.Input[float]:
    return value


@dataclass(frozen=True)
class Watch:
    """How CloudWatch watches one signal of the catalogue."""

    description: str
    metrics: Mapping[str, Metric]  # by query id; one entry unless an expression combines them
    expression: str | None = None
    scale: Callable[[float], pulumi.Input[float]] = _same  # the file's unit to the metric's
    inverse: bool = False  # the metric falls as the watched figure rises (free bytes vs. used share)
    treat_missing_data: str = "missing"
    evaluation_periods: int = 5
    datapoints_to_alarm: int = 3


@dataclass(frozen=True)
class AlarmSpec:
    alarm: Alarm  # the catalogue entry
    watch: Watch

    @property
    def key(self) -> str:  # what is watched, e.g. "cpu"; the alarm is named <stack>-alarms-<key>-<severity>
        return self.alarm.signal.name.replace("_", "-")

    @property
    def role(self) -> str:
        return self.alarm.role

    @property
    def severity(self) -> Severity:
        return self.alarm.severity

    @property
    def baseline(self) -> str:  # the numbers-file key the threshold comes from
        return self.alarm.baseline

    @property
    def description(self) -> str:
        return self.watch.description

    @property
    def threshold(self) -> pulumi.Input[float]:
        return self.watch.scale(self.alarm.threshold)

    @property
    def comparison(self) -> str:
        flipped = {">": "<", "<": ">"}[self.alarm.comparison] if self.watch.inverse else self.alarm.comparison
        return OPERATORS[flipped]

    @property
    def metrics(self) -> Mapping[str, Metric]:
        return self.watch.metrics

    @property
    def expression(self) -> str | None:
        return self.watch.expression


@dataclass(frozen=True)
class Watched:
    """The stack's resources the alarms watch, by their CloudWatch dimensions."""

    stack: str
    asg_name: pulumi.Input[str]
    alb_arn_suffix: pulumi.Input[str]
    target_group_arn_suffix: pulumi.Input[str]
    db_primary_id: str
    db_replica_id: str | None
    # Each instance's allocated storage as RDS reports it (by identifier): storage autoscaling grows it, and
    # pulumi-aws then ignores the configured size, so the free-storage thresholds follow the reported one.
    db_allocated_storage_gb: Mapping[str, pulumi.Input[int]]
    redis_member_ids: list[str]
    queue_name: str
    dead_letter_queue_name: str
    # lb.maintenance_mode: no listener forwards to the target group, so its target metrics are not published.
    maintenance_mode: bool = False


def _fleet(w: Watched) -> dict[str, Watch]:
    asg = {"AutoScalingGroupName": w.asg_name}
    alb = {"LoadBalancer": w.alb_arn_suffix}
    targets = {"TargetGroup": w.target_group_arn_suffix, "LoadBalancer": w.alb_arn_suffix}
    healthy = {"m1": Metric("AWS/ApplicationELB", "HealthyHostCount", targets, "Minimum")}
    return {
        "cpu": Watch(
            "Fleet CPU (000 Critical Thresholds)", {"m1": Metric("AWS/EC2", "CPUUtilization", asg, "Average")}
        ),
        "memory": Watch(
            "Fleet memory, busiest instance", {"m1": Metric(AGENT_NAMESPACE, "mem_used_percent", asg, "Maximum")}
        ),
        "disk": Watch(
            "Root disk, fullest instance", {"m1": Metric(AGENT_NAMESPACE, "disk_used_percent", asg, "Maximum")}
        ),
        "response_time_p95": Watch(
            "p95 target response time in seconds (the file says ms)",
            {"m1": Metric("AWS/ApplicationELB", "TargetResponseTime", alb, "p95")},
            scale=lambda ms: ms / 1000,
        ),
        "error_rate": Watch(
            "Share of requests answered 5XX by the targets, percent",
            {
                "errors": Metric("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", alb, "Sum"),
                "requests": Metric("AWS/ApplicationELB", "RequestCount", alb, "Sum"),
            },
            expression="IF(requests > 0, 100 * FILL(errors, 0) / requests, 0)",
            treat_missing_data="notBreaching",
        ),
        "unhealthy_hosts": Watch(
            "A target fails /health", {"m1": Metric("AWS/ApplicationELB", "UnHealthyHostCount", targets, "Maximum")}
        ),
        "healthy_hosts_below_normal": Watch("Fewer healthy targets than the normal fleet size", healthy),
        # Missing data is a fleet that stopped reporting, so it breaches; but in maintenance mode the target group
        # serves no listener and HealthyHostCount is not published at all: planned, so it must not page.
        "no_healthy_hosts": Watch(
            "No target can serve",
            healthy,
            treat_missing_data="notBreaching" if w.maintenance_mode else "breaching",
            evaluation_periods=2,
            datapoints_to_alarm=2,
        ),
    }


def _free_bytes_below(allocated_gb: pulumi.Input[int]) -> Callable[[float], pulumi.Output[float]]:
    """The used-share level (percent) as free bytes of ``allocated_gb``."""
    return lambda pct: pulumi.Output.from_input(allocated_gb).apply(lambda gb: gb * GIB * (100 - pct) / 100)


def _database(b: Baselines, w: Watched) -> dict[str, Watch]:
    watches: dict[str, Watch] = {}
    for role, ident in (("db", w.db_primary_id), ("db_replica", w.db_replica_id)):
        if ident is None:
            continue
        dims = {"DBInstanceIdentifier": ident}
        watches |= {
            f"{role}_cpu": Watch(f"RDS {ident} CPU", {"m1": Metric("AWS/RDS", "CPUUtilization", dims, "Average")}),
            # Free bytes below the allocated size times (100 - disk level) %, of the size RDS reports (it grows with
            # storage autoscaling; `pulumi up --refresh` moves the thresholds with it).
            f"{role}_free_storage": Watch(
                f"RDS {ident} free storage, bytes (used share of the allocated storage)",
                {"m1": Metric("AWS/RDS", "FreeStorageSpace", dims, "Minimum")},
                scale=_free_bytes_below(w.db_allocated_storage_gb[ident]),
                inverse=True,
            ),
            # Each connection is a backend process with its own memory: the memory levels, as a share of
            # database.max_connections.
            f"{role}_connections": Watch(
                f"RDS {ident} connections (share of database.max_connections)",
                {"m1": Metric("AWS/RDS", "DatabaseConnections", dims, "Maximum")},
                scale=lambda pct: b.database.max_connections * pct / 100,
            ),
        }
    if w.db_replica_id:
        watches["db_replica_lag"] = Watch(
            "Read replica lag, seconds",
            {"m1": Metric("AWS/RDS", "ReplicaLag", {"DBInstanceIdentifier": w.db_replica_id}, "Maximum")},
        )
    return watches


def _per_node(metric: str, members: list[str], stat: str) -> dict[str, Metric]:
    return {f"n{i}": Metric("AWS/ElastiCache", metric, {"CacheClusterId": m}, stat) for i, m in enumerate(members)}


def _cache(w: Watched) -> dict[str, Watch]:
    members = w.redis_member_ids
    nodes = ", ".join(f"n{i}" for i in range(len(members)))
    return {
        "redis_cpu": Watch(
            "Redis engine CPU, busiest node",
            _per_node("EngineCPUUtilization", members, "Average"),
            expression=f"MAX([{nodes}])",
        ),
        "redis_memory": Watch(
            "Redis memory used, fullest node",
            _per_node("DatabaseMemoryUsagePercentage", members, "Maximum"),
            expression=f"MAX([{nodes}])",
        ),
        "redis_evictions": Watch(
            "Redis evicts keys (memory full)",
            _per_node("Evictions", members, "Sum"),
            expression=f"SUM([{nodes}])",
            treat_missing_data="notBreaching",
        ),
    }


def _queue(w: Watched) -> dict[str, Watch]:
    dlq = {"QueueName": w.dead_letter_queue_name}
    return {
        "queue_age": Watch(
            "Oldest job waits longer than the lag limit",
            {"m1": Metric("AWS/SQS", "ApproximateAgeOfOldestMessage", {"QueueName": w.queue_name}, "Maximum")},
        ),
        "dlq_not_empty": Watch(
            "Jobs failed max_receive_count times",
            {"m1": Metric("AWS/SQS", "ApproximateNumberOfMessagesVisible", dlq, "Maximum")},
            evaluation_periods=1,
            datapoints_to_alarm=1,
        ),
    }


def _app(w: Watched) -> dict[str, Watch]:
    """003 application alarms, on what the agent scrapes from /metrics."""
    dims = {APP_DIMENSION: w.stack}
    quiet = "notBreaching"  # no traffic, no data: not an incident
    return {
        "inference_time": Watch(
            "Mean model inference time, seconds",
            {
                "total": Metric(APP_NAMESPACE, INFERENCE_SUM, dims, "Sum"),
                "count": Metric(APP_NAMESPACE, INFERENCE_COUNT, dims, "Sum"),
            },
            expression="IF(count > 0, total / count, 0)",
            treat_missing_data=quiet,
        ),
        "processing_lag": Watch(
            "Job processing lag, seconds",
            {"m1": Metric(APP_NAMESPACE, PROCESSING_LAG, dims, "Maximum")},
            treat_missing_data=quiet,
        ),
        "auth_failure_rate": Watch(
            "Share of authentication attempts that fail, percent",
            {
                "failures": Metric(APP_NAMESPACE, AUTH_FAILURES, dims, "Sum"),
                "attempts": Metric(APP_NAMESPACE, AUTH_REQUESTS, dims, "Sum"),
            },
            expression="IF(attempts > 0, 100 * FILL(failures, 0) / attempts, 0)",
            treat_missing_data=quiet,
        ),
    }


def watches(b: Baselines, w: Watched) -> dict[str, Watch]:
    """How CloudWatch watches each signal of the catalogue, by signal name."""
    return _fleet(w) | _database(b, w) | _cache(w) | _queue(w) | _app(w)


def cloudwatch_alarms(b: Baselines, w: Watched) -> list[Alarm]:
    return for_target(catalogue(b, db_replica=w.db_replica_id is not None), Target.CLOUDWATCH)


def alarm_specs(b: Baselines, w: Watched) -> list[AlarmSpec]:
    table = watches(b, w)
    entries = cloudwatch_alarms(b, w)
    missing = sorted({a.signal.name for a in entries} - set(table))
    if missing:
        raise CatalogueError(
            f"catalogue entries with no CloudWatch metric: {', '.join(missing)}; add them to {__name__}"
        )
    return [AlarmSpec(a, table[a.signal.name]) for a in entries]


@dataclass(frozen=True)
class AlarmsArgs:
    settings: AlarmSettings
    baselines: Baselines
    watched: Watched
    kms_key_arn: pulumi.Input[str]
    # Where the stack's alarms live besides CloudWatch (the workload's PrometheusRule): named in the outputs.
    other_targets: frozenset[Target] = frozenset()


def _query(qid: str, m: Metric) -> dict:
    return {
        "id": qid,
        "return_data": False,
        "metric": {
            "namespace": m.namespace,
            "metric_name": m.name,
            "dimensions": dict(m.dimensions),
            "period": PERIOD_S,
            "stat": m.stat,
        },
    }


def _metric_inputs(spec: AlarmSpec) -> dict:
    if spec.expression:
        return {
            "metric_queries": [
                {"id": "e1", "expression": spec.expression, "label": spec.description, "return_data": True},
                *(_query(qid, m) for qid, m in spec.metrics.items()),
            ]
        }
    (m,) = spec.metrics.values()
    stat = {"extended_statistic": m.stat} if m.stat.startswith("p") else {"statistic": m.stat}
    extra = {"evaluate_low_sample_count_percentiles": "ignore"} if m.stat.startswith("p") else {}
    return {
        "namespace": m.namespace,
        "metric_name": m.name,
        "dimensions": dict(m.dimensions),
        "period": PERIOD_S,
        **stat,
        **extra,
    }


class Alarms(Tier):
    TIER = "alarms"

    specs: list[AlarmSpec]
    topic_arns: dict[Severity, pulumi.Output[str]]
    alarms: dict[str, dict[str, str]]  # catalogue key -> {target: alarm name}, the `alarms` stack output
    arns: dict[str, pulumi.Output[str]]  # catalogue key -> CloudWatch alarm ARN (FIS stop conditions)

    def __init__(self, stack: str, tags: dict[str, str], args: AlarmsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(stack, tags, opts)
        topics = {sev: self._topic(sev, args) for sev in SEVERITIES}
        self.specs = alarm_specs(args.baselines, args.watched)
        alarms = {}
        roles = {spec.alarm.key: spec.role for spec in self.specs}
        for spec in self.specs:
            name = self.name_of(spec.role)
            alarms[spec.role] = aws.cloudwatch.MetricAlarm(
                name,
                name=name,
                alarm_description=f"{spec.description}. Threshold from baselines.yaml {spec.baseline}.",
                comparison_operator=spec.comparison,
                threshold=spec.threshold,
                evaluation_periods=spec.watch.evaluation_periods,
                datapoints_to_alarm=spec.watch.datapoints_to_alarm,
                treat_missing_data=spec.watch.treat_missing_data,
                alarm_actions=[topics[spec.severity].arn],
                ok_actions=[topics[spec.severity].arn],
                tags=self.tagged(spec.role, Severity=spec.severity, Baseline=spec.baseline),
                opts=self.child,
                **_metric_inputs(spec),
            )
        down_name = self.name_of("service-down")
        down = [roles[key] for key in SERVICE_DOWN]
        rule = " OR ".join(f'ALARM("{self.name_of(role)}")' for role in down)
        aws.cloudwatch.CompositeAlarm(
            down_name,
            alarm_name=down_name,
            alarm_description="P0 service down: no healthy target or a critical error rate (002 severity P0).",
            alarm_rule=rule,
            alarm_actions=[topics["critical"].arn],
            ok_actions=[topics["critical"].arn],
            tags=self.tagged("service-down", Severity="critical", Priority="P0"),
            opts=pulumi.ResourceOptions.merge(self.child, pulumi.ResourceOptions(depends_on=[alarms[r] for r in down])),
        )
        self.topic_arns = {sev: t.arn for sev, t in topics.items()}
        self.arns = {spec.alarm.key: alarms[spec.role].arn for spec in self.specs}
        entries = [spec.alarm for spec in self.specs]
        self.alarms = names_by_key(entries, stack, frozenset({Target.CLOUDWATCH}) | args.other_targets)
        self.alarms[SERVICE_DOWN_KEY] = {Target.CLOUDWATCH.value: down_name}
        self.register_outputs({"topic_arns": self.topic_arns, "alarms": self.alarms, "arns": self.arns})

    def _topic(self, severity: Severity, args: AlarmsArgs) -> aws.sns.Topic:
        topic = aws.sns.Topic(
            self.name_of(severity),
            name=self.name_of(severity),
            kms_master_key_id=args.kms_key_arn,
            tags=self.tagged(severity, Severity=severity),
            opts=self.child,
        )
        for i, email in enumerate(args.settings.emails):
            aws.sns.TopicSubscription(
                self.name_of(f"{severity}-email-{i}"),
                topic=topic.arn,
                protocol="email",
                endpoint=email,
                opts=self.child,
            )
        return topic
