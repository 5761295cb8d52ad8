"""Alarms tier: CloudWatch alarms generated from the numbers file.

Every warning/critical pair in ``baselines.yaml`` becomes two alarms on the
metric it governs, with exactly the file's value (converted only where the
metric's unit differs: ms to s, percent of a capacity to a count or bytes).
Single-level checks (unhealthy hosts, DLQ not empty, evictions, the 003
application alarms) are warnings, as the runbooks rank them. Each alarm
notifies the SNS topic of its severity; a composite "service down" alarm
pages as P0 when no target is healthy or the error rate is critical.

:func:`alarm_specs` is plain data; the dashboard draws the same specs.
"""

from __future__ import annotations

from collections.abc import Mapping
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
from pynomaly_ops.baselines import SEVERITIES, Baselines, Level, Severity
from pynomaly_ops.settings import Alarms as AlarmSettings

GIB = 1024**3
ABOVE = "GreaterThanThreshold"
BELOW = "LessThanThreshold"
PERIOD_S = 60


@dataclass(frozen=True)
class Metric:
    namespace: str
    name: str
    dimensions: Mapping[str, pulumi.Input[str]]
    stat: str  # Average, Maximum, Minimum, Sum or a percentile such as p95


@dataclass(frozen=True)
class AlarmSpec:
    key: str  # what is watched, e.g. "cpu"; the alarm is named <stack>-alarms-<key>-<severity>
    severity: Severity
    baseline: str  # the numbers-file key the threshold comes from
    description: str
    threshold: float
    comparison: str
    metrics: Mapping[str, Metric]  # by query id; one entry unless an expression combines them
    expression: str | None = None
    treat_missing_data: str = "missing"
    evaluation_periods: int = 5
    datapoints_to_alarm: int = 3

    @property
    def role(self) -> str:
        return f"{self.key}-{self.severity}"


@dataclass(frozen=True)
class Watched:
    """The stack's resources the alarms watch, by their CloudWatch dimensions."""

    stack: str
    asg_name: str
    alb_arn_suffix: pulumi.Input[str]
    target_group_arn_suffix: pulumi.Input[str]
    db_primary_id: str
    db_replica_id: str | None
    db_allocated_storage_gb: int
    redis_member_ids: list[str]
    queue_name: str
    dead_letter_queue_name: str


def pair(
    key: str,
    baseline: str,
    level: Level,
    description: str,
    metrics: Mapping[str, Metric],
    *,
    comparison: str = ABOVE,
    scale=lambda v: v,
    **kw,
) -> list[AlarmSpec]:
    """A warning and a critical alarm for the numbers-file pair ``baseline``."""
    return [
        AlarmSpec(
            key=key,
            severity=sev,
            baseline=f"{baseline}.{sev}",
            description=description,
            threshold=scale(level.at(sev)),
            comparison=comparison,
            metrics=metrics,
            **kw,
        )
        for sev in SEVERITIES
    ]


def fleet_specs(b: Baselines, w: Watched) -> list[AlarmSpec]:
    t = b.thresholds
    asg = {"AutoScalingGroupName": w.asg_name}
    alb = {"LoadBalancer": w.alb_arn_suffix}
    targets = {"TargetGroup": w.target_group_arn_suffix, "LoadBalancer": w.alb_arn_suffix}
    return [
        *pair(
            "cpu",
            "thresholds.cpu_percent",
            t.cpu_percent,
            "Fleet CPU (000 Critical Thresholds)",
            {"m1": Metric("AWS/EC2", "CPUUtilization", asg, "Average")},
        ),
        *pair(
            "memory",
            "thresholds.memory_percent",
            t.memory_percent,
            "Fleet memory, busiest instance",
            {"m1": Metric(AGENT_NAMESPACE, "mem_used_percent", asg, "Maximum")},
        ),
        *pair(
            "disk",
            "thresholds.disk_percent",
            t.disk_percent,
            "Root disk, fullest instance",
            {"m1": Metric(AGENT_NAMESPACE, "disk_used_percent", asg, "Maximum")},
        ),
        *pair(
            "response-time-p95",
            "thresholds.response_time_p95_ms",
            t.response_time_p95_ms,
            "p95 target response time in seconds (the file says ms)",
            {"m1": Metric("AWS/ApplicationELB", "TargetResponseTime", alb, "p95")},
            scale=lambda ms: ms / 1000,
        ),
        *pair(
            "error-rate",
            "thresholds.error_rate_percent",
            t.error_rate_percent,
            "Share of requests answered 5XX by the targets, percent",
            {
                "errors": Metric("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", alb, "Sum"),
                "requests": Metric("AWS/ApplicationELB", "RequestCount", alb, "Sum"),
            },
            expression="IF(requests > 0, 100 * FILL(errors, 0) / requests, 0)",
            treat_missing_data="notBreaching",
        ),
        AlarmSpec(
            "unhealthy-hosts",
            "warning",
            "structural: any unhealthy target",
            "A target fails /health",
            0,
            ABOVE,
            {"m1": Metric("AWS/ApplicationELB", "UnHealthyHostCount", targets, "Maximum")},
        ),
        AlarmSpec(
            "healthy-hosts-below-normal",
            "warning",
            "scaling.instances_normal",
            "Fewer healthy targets than the normal fleet size",
            b.scaling.instances_normal,
            BELOW,
            {"m1": Metric("AWS/ApplicationELB", "HealthyHostCount", targets, "Minimum")},
        ),
        AlarmSpec(
            "no-healthy-hosts",
            "critical",
            "structural: no healthy target",
            "No target can serve",
            1,
            BELOW,
            {"m1": Metric("AWS/ApplicationELB", "HealthyHostCount", targets, "Minimum")},
            treat_missing_data="breaching",
            evaluation_periods=2,
            datapoints_to_alarm=2,
        ),
    ]


def database_specs(b: Baselines, w: Watched) -> list[AlarmSpec]:
    t, db = b.thresholds, b.database
    specs = []
    for role, ident in (("db", w.db_primary_id), ("db-replica", w.db_replica_id)):
        if ident is None:
            continue
        dims = {"DBInstanceIdentifier": ident}
        specs += [
            *pair(
                f"{role}-cpu",
                "thresholds.cpu_percent",
                t.cpu_percent,
                f"RDS {ident} CPU",
                {"m1": Metric("AWS/RDS", "CPUUtilization", dims, "Average")},
            ),
            # Free bytes below the allocated size times (100 - disk level) %.
            *pair(
                f"{role}-free-storage",
                "thresholds.disk_percent",
                t.disk_percent,
                f"RDS {ident} free storage, bytes (used share of the allocated storage)",
                {"m1": Metric("AWS/RDS", "FreeStorageSpace", dims, "Minimum")},
                comparison=BELOW,
                scale=lambda pct: w.db_allocated_storage_gb * GIB * (100 - pct) / 100,
            ),
            # Each connection is a backend process with its own memory: the
            # memory levels, as a share of database.max_connections.
            *pair(
                f"{role}-connections",
                "thresholds.memory_percent",
                t.memory_percent,
                f"RDS {ident} connections (share of database.max_connections)",
                {"m1": Metric("AWS/RDS", "DatabaseConnections", dims, "Maximum")},
                scale=lambda pct: db.max_connections * pct / 100,
            ),
        ]
    if w.db_replica_id:
        specs += pair(
            "db-replica-lag",
            "database.replica_lag_s",
            db.replica_lag_s,
            "Read replica lag, seconds",
            {"m1": Metric("AWS/RDS", "ReplicaLag", {"DBInstanceIdentifier": w.db_replica_id}, "Maximum")},
        )
    return specs


def _per_node(metric: str, members: list[str], stat: str) -> dict[str, Metric]:
    return {f"n{i}": Metric("AWS/ElastiCache", metric, {"CacheClusterId": m}, stat) for i, m in enumerate(members)}


def cache_specs(b: Baselines, w: Watched) -> list[AlarmSpec]:
    t, members = b.thresholds, w.redis_member_ids
    nodes = ", ".join(f"n{i}" for i in range(len(members)))
    return [
        *pair(
            "redis-cpu",
            "thresholds.cpu_percent",
            t.cpu_percent,
            "Redis engine CPU, busiest node",
            _per_node("EngineCPUUtilization", members, "Average"),
            expression=f"MAX([{nodes}])",
        ),
        *pair(
            "redis-memory",
            "thresholds.memory_percent",
            t.memory_percent,
            "Redis memory used, fullest node",
            _per_node("DatabaseMemoryUsagePercentage", members, "Maximum"),
            expression=f"MAX([{nodes}])",
        ),
        AlarmSpec(
            "redis-evictions",
            "warning",
            "structural: any eviction",
            "Redis evicts keys (memory full)",
            0,
            ABOVE,
            _per_node("Evictions", members, "Sum"),
            expression=f"SUM([{nodes}])",
            treat_missing_data="notBreaching",
        ),
    ]


def queue_specs(b: Baselines, w: Watched) -> list[AlarmSpec]:
    return [
        AlarmSpec(
            "queue-age",
            "warning",
            "app_alarms.processing_lag_s",
            "Oldest job waits longer than the lag limit",
            b.app_alarms.processing_lag_s,
            ABOVE,
            {"m1": Metric("AWS/SQS", "ApproximateAgeOfOldestMessage", {"QueueName": w.queue_name}, "Maximum")},
        ),
        AlarmSpec(
            "dlq-not-empty",
            "warning",
            "structural: any dead letter",
            "Jobs failed max_receive_count times",
            0,
            ABOVE,
            {
                "m1": Metric(
                    "AWS/SQS", "ApproximateNumberOfMessagesVisible", {"QueueName": w.dead_letter_queue_name}, "Maximum"
                )
            },
            evaluation_periods=1,
            datapoints_to_alarm=1,
        ),
    ]


def app_specs(b: Baselines, w: Watched) -> list[AlarmSpec]:
    """003 application alarms, on what the agent scrapes from /metrics."""
    a, dims = b.app_alarms, {APP_DIMENSION: w.stack}
    quiet = {"treat_missing_data": "notBreaching"}  # no traffic, no data: not an incident
    return [
        AlarmSpec(
            "inference-time",
            "warning",
            "app_alarms.inference_time_s",
            "Mean model inference time, seconds",
            a.inference_time_s,
            ABOVE,
            {
                "total": Metric(APP_NAMESPACE, INFERENCE_SUM, dims, "Sum"),
                "count": Metric(APP_NAMESPACE, INFERENCE_COUNT, dims, "Sum"),
            },
            expression="IF(count > 0, total / count, 0)",
            **quiet,
        ),
        AlarmSpec(
            "processing-lag",
            "warning",
            "app_alarms.processing_lag_s",
            "Job processing lag, seconds",
            a.processing_lag_s,
            ABOVE,
            {"m1": Metric(APP_NAMESPACE, PROCESSING_LAG, dims, "Maximum")},
            **quiet,
        ),
        AlarmSpec(
            "auth-failure-rate",
            "warning",
            "app_alarms.auth_failure_rate_percent",
            "Share of authentication attempts that fail, percent",
            a.auth_failure_rate_percent,
            ABOVE,
            {
                "failures": Metric(APP_NAMESPACE, AUTH_FAILURES, dims, "Sum"),
                "attempts": Metric(APP_NAMESPACE, AUTH_REQUESTS, dims, "Sum"),
            },
            expression="IF(attempts > 0, 100 * FILL(failures, 0) / attempts, 0)",
            **quiet,
        ),
    ]


def alarm_specs(b: Baselines, w: Watched) -> list[AlarmSpec]:
    return [*fleet_specs(b, w), *database_specs(b, w), *cache_specs(b, w), *queue_specs(b, w), *app_specs(b, w)]


# The P0 composite: either condition means users get no service.
SERVICE_DOWN = ("no-healthy-hosts-critical", "error-rate-critical")


@dataclass(frozen=True)
class AlarmsArgs:
    settings: AlarmSettings
    baselines: Baselines
    watched: Watched
    kms_key_arn: pulumi.Input[str]


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

    def __init__(self, stack: str, tags: dict[str, str], args: AlarmsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(stack, tags, opts)
        topics = {sev: self._topic(sev, args) for sev in SEVERITIES}
        self.specs = alarm_specs(args.baselines, args.watched)
        alarms = {}
        for spec in self.specs:
            name = self.name_of(spec.role)
            alarms[spec.role] = aws.cloudwatch.MetricAlarm(
                name,
                name=name,
                alarm_description=f"{spec.description}. Threshold from baselines.yaml {spec.baseline}.",
                comparison_operator=spec.comparison,
                threshold=spec.threshold,
                evaluation_periods=spec.evaluation_periods,
                datapoints_to_alarm=spec.datapoints_to_alarm,
                treat_missing_data=spec.treat_missing_data,
                alarm_actions=[topics[spec.severity].arn],
                ok_actions=[topics[spec.severity].arn],
                tags=self.tagged(spec.role, Severity=spec.severity, Baseline=spec.baseline),
                opts=self.child,
                **_metric_inputs(spec),
            )
        down_name = self.name_of("service-down")
        rule = " OR ".join(f'ALARM("{self.name_of(role)}")' for role in SERVICE_DOWN)
        aws.cloudwatch.CompositeAlarm(
            down_name,
            alarm_name=down_name,
            alarm_description="P0 service down: no healthy target or a critical error rate (002 severity P0).",
            alarm_rule=rule,
            alarm_actions=[topics["critical"].arn],
            ok_actions=[topics["critical"].arn],
            tags=self.tagged("service-down", Severity="critical", Priority="P0"),
            opts=pulumi.ResourceOptions.merge(
                self.child, pulumi.ResourceOptions(depends_on=[alarms[r] for r in SERVICE_DOWN])
            ),
        )
        self.finish(
            topic_arns={sev: t.arn for sev, t in topics.items()},
            alarm_names=[self.name_of(s.role) for s in self.specs] + [down_name],
        )

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
