"""The alarm catalogue: every alarm the project raises, keyed by the numbers file, named once per target.

Each entry says which ``baselines.yaml`` key its threshold comes from (or which structural rule it is,
such as "any dead letter"), what it watches, how it compares, its severity and, per target, its name:

- CloudWatch (infra/alarms.py): ``<stack>-alarms-<signal>-<severity>``, e.g. ``prod-alarms-error-rate-critical``
- the local stack's Prometheus (local/rules.py): the same scheme, e.g. ``local-alarms-error-rate-critical``
- the Kubernetes PrometheusRule (infra/alert_rules.py): ``Pynomaly<Signal><Severity>``, e.g.
  ``PynomalyErrorRateCritical``

The three generators read :func:`catalogue`; each refuses an entry for its target that it cannot express,
and :func:`catalogue` refuses a number of the file that no entry watches. A drill asks "did
``error_rate.critical`` fire?" the same way on every target (``StackOutputs.alarms``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel

from pynomaly_ops.baselines import SEVERITIES, Baselines, Level, Severity


class Target(StrEnum):
    CLOUDWATCH = "cloudwatch"
    PROMETHEUS = "prometheus"  # the local stack's
    KUBERNETES = "kubernetes"  # the workload's PrometheusRule


Comparison = Literal[">", "<"]
ALL = frozenset(Target)
AWS = frozenset({Target.CLOUDWATCH})
HOSTS = frozenset({Target.CLOUDWATCH, Target.PROMETHEUS})  # the service on hosts behind a load balancer
STRUCTURAL = "structural: "


class CatalogueError(ValueError):
    """A number of the file has no alarm, or a target cannot express an entry meant for it."""


@dataclass(frozen=True)
class Signal:
    """What one alarm (or warning/critical pair) watches."""

    name: str  # snake_case; the key is <name>.<severity>
    source: str  # dotted baselines key (a warning/critical pair or one number), or "structural: <rule>"
    description: str
    targets: frozenset[Target]
    comparison: Comparison = ">"
    severity: Severity = "warning"  # for a single number or a structural rule
    threshold: float = 0  # for a structural rule
    needs_replica: bool = False  # only where the database has a read replica


SIGNALS: tuple[Signal, ...] = (
    # 000 Critical Thresholds, on the compute that serves the API (EC2 fleet, the pods, the local host)
    Signal("cpu", "thresholds.cpu_percent", "API compute CPU, percent", ALL),
    Signal("memory", "thresholds.memory_percent", "API compute memory, percent", ALL),
    Signal(
        "disk", "thresholds.disk_percent", "Root disk used, percent", frozenset({Target.CLOUDWATCH, Target.PROMETHEUS})
    ),
    Signal("response_time_p95", "thresholds.response_time_p95_ms", "p95 response time, ms", ALL),
    Signal("error_rate", "thresholds.error_rate_percent", "Share of requests answered 5xx, percent", ALL),
    # the load balancer's view of the fleet
    Signal(
        "unhealthy_hosts",
        STRUCTURAL + "any unhealthy target",
        "A target fails /health",
        HOSTS,
    ),
    Signal(
        "healthy_hosts_below_normal",
        "scaling.instances_normal",
        "Fewer healthy targets than the normal fleet size",
        HOSTS,
        comparison="<",
    ),
    Signal(
        "no_healthy_hosts",
        STRUCTURAL + "no healthy target",
        "No target can serve",
        HOSTS,
        comparison="<",
        severity="critical",
        threshold=1,
    ),
    # the database (RDS per instance; Patroni's replication lag locally)
    Signal("db_cpu", "thresholds.cpu_percent", "Database primary CPU, percent", AWS),
    Signal("db_free_storage", "thresholds.disk_percent", "Database primary storage used, percent", AWS),
    Signal(
        "db_connections",
        "thresholds.memory_percent",
        "Database primary connections, percent of database.max_connections",
        AWS,
    ),
    Signal("db_replica_cpu", "thresholds.cpu_percent", "Read replica CPU, percent", AWS, needs_replica=True),
    Signal(
        "db_replica_free_storage",
        "thresholds.disk_percent",
        "Read replica storage used, percent",
        AWS,
        needs_replica=True,
    ),
    Signal(
        "db_replica_connections",
        "thresholds.memory_percent",
        "Read replica connections, percent of database.max_connections",
        AWS,
        needs_replica=True,
    ),
    Signal(
        "db_replica_lag",
        "database.replica_lag_s",
        "Replica lag, seconds",
        HOSTS,
        needs_replica=True,
    ),
    # the cache
    Signal("redis_cpu", "thresholds.cpu_percent", "Redis engine CPU, busiest node, percent", AWS),
    Signal("redis_memory", "thresholds.memory_percent", "Redis memory used, fullest node, percent", AWS),
    Signal("redis_evictions", STRUCTURAL + "any eviction", "Redis evicts keys (memory full)", AWS),
    # the queue
    Signal("queue_age", "app_alarms.processing_lag_s", "Oldest queued job's age, seconds", AWS),
    Signal("dlq_not_empty", STRUCTURAL + "any dead letter", "Jobs failed max_receive_count times", HOSTS),
    # 003 application-level metrics
    Signal("inference_time", "app_alarms.inference_time_s", "Model inference time, seconds", ALL),
    Signal("processing_lag", "app_alarms.processing_lag_s", "Job processing lag, seconds", ALL),
    Signal("auth_failure_rate", "app_alarms.auth_failure_rate_percent", "Authentication failures, percent", ALL),
    # the workload on Kubernetes
    Signal(
        "pods_below_minimum",
        "scaling.pods_min",
        "Fewer API pods available than the HPA's minimum",
        frozenset({Target.KUBERNETES}),
        comparison="<",
        severity="critical",
    ),
    Signal(
        "pod_restarts",
        STRUCTURAL + "any container restart in the last hour",
        "A Pynomaly container restarted",
        frozenset({Target.KUBERNETES}),
    ),
)

# The P0 "service down" composite (002 severity P0): either means users get no service.
SERVICE_DOWN = ("no_healthy_hosts.critical", "error_rate.critical")
SERVICE_DOWN_KEY = "service_down.critical"  # the composite's key in StackOutputs.alarms
# What stops a drill on AWS (the FIS templates' stop conditions, the drill runner's abort guard): what users
# feel, the P0 pair and the critical p95; not the capacity alarms a drill is expected to trip.
STOP_ON = (*SERVICE_DOWN, "response_time_p95.critical")


@dataclass(frozen=True)
class Alarm:
    signal: Signal
    severity: Severity
    threshold: float  # in the numbers file's unit
    baseline: str  # e.g. thresholds.cpu_percent.warning, or the structural rule
    targets: frozenset[Target] = field(default_factory=frozenset)

    @property
    def key(self) -> str:
        return f"{self.signal.name}.{self.severity}"

    @property
    def comparison(self) -> Comparison:
        return self.signal.comparison

    @property
    def role(self) -> str:
        """``<signal>-<severity>`` with dashes: the last part of the CloudWatch and Prometheus names."""
        return f"{self.signal.name.replace('_', '-')}-{self.severity}"

    def name(self, target: Target, stack: str) -> str:
        if target == Target.KUBERNETES:
            camel = "".join(part.capitalize() for part in self.signal.name.split("_"))
            return f"Pynomaly{camel}{self.severity.capitalize()}"
        return f"{stack}-alarms-{self.role}"


def number_at(b: Baselines, dotted: str) -> Level | float:
    """The number (or warning/critical pair) at a dotted key of the file, e.g. ``thresholds.cpu_percent``."""
    node: object = b
    for part in dotted.split("."):
        node = getattr(node, part)
    if not isinstance(node, Level | int | float):
        raise CatalogueError(f"{dotted} is not a number or a warning/critical pair of the numbers file")
    return node


def _expand(b: Baselines, s: Signal) -> list[Alarm]:
    if s.source.startswith(STRUCTURAL):
        return [Alarm(s, s.severity, s.threshold, s.source, s.targets)]
    value = number_at(b, s.source)
    if isinstance(value, Level):
        return [Alarm(s, sev, value.at(sev), f"{s.source}.{sev}", s.targets) for sev in SEVERITIES]
    return [Alarm(s, s.severity, value, s.source, s.targets)]


def catalogue(b: Baselines, *, db_replica: bool = True) -> list[Alarm]:
    """Every alarm for a platform with (or without) a database read replica."""
    unwatched = sorted(set(alarm_numbers(b)) - {s.source for s in SIGNALS})
    if unwatched:
        raise CatalogueError(f"numbers with no alarm: {', '.join(unwatched)}; add a Signal to {__name__}.SIGNALS")
    return [a for s in SIGNALS if db_replica or not s.needs_replica for a in _expand(b, s)]


def for_target(alarms: list[Alarm], target: Target) -> list[Alarm]:
    return [a for a in alarms if target in a.targets]


def alarm_numbers(b: Baselines) -> list[str]:
    """The numbers of the file that are alarm thresholds: every warning/critical pair and 003's app alarms."""
    keys = [key for key, _ in _levels(b)]
    keys += [f"app_alarms.{name}" for name, value in b.app_alarms if isinstance(value, int | float)]
    return keys


def _levels(model: BaseModel, prefix: str = "") -> list[tuple[str, Level]]:
    found: list[tuple[str, Level]] = []
    for name, value in model:
        if isinstance(value, Level):
            found.append((f"{prefix}{name}", value))
        elif isinstance(value, BaseModel):
            found += _levels(value, f"{prefix}{name}.")
    return found


def names_by_key(alarms: list[Alarm], stack: str, targets: frozenset[Target]) -> dict[str, dict[str, str]]:
    """``{key: {target: name}}`` for the targets a stack has: what ``StackOutputs.alarms`` carries."""
    return {
        a.key: {t.value: a.name(t, stack) for t in Target if t in a.targets & targets}
        for a in alarms
        if a.targets & targets
    }
