"""The local stack's Prometheus alerting rules: the catalogue's entries for the local Prometheus.

Every entry of the alarm catalogue (pynomaly_ops/alarms.py) meant for the local Prometheus becomes one
rule, named as the catalogue names it (``local-alarms-<signal>-<severity>``) and holding exactly the
numbers file's value; an entry this module has no expression for is an error, so a number added to the
file cannot silently go unwatched.
"""

from __future__ import annotations

from dataclasses import dataclass

from local.layout import STACK
from local.programs import FLEET_GROUP
from pynomaly_ops import metrics as m
from pynomaly_ops.alarms import Alarm, CatalogueError, Target, catalogue, for_target
from pynomaly_ops.baselines import Baselines

# Host figures come from node_exporter (the CloudWatch agent's stand-in).
_REAL_FS = 'fstype!~"tmpfs|ramfs|devtmpfs|squashfs|nsfs|proc|sysfs"'
_FLEET = f'proxy="{FLEET_GROUP}"'
# HAProxy's count of servers passing their health check; absent (HAProxy down) counts as none.
_HEALTHY = f"(haproxy_backend_active_servers{{{_FLEET}}} or on() vector(0))"

# What each signal of the catalogue measures here, as a PromQL value compared with its threshold.
EXPRESSIONS: dict[str, str] = {
    "cpu": '100 * (1 - avg(rate(node_cpu_seconds_total{mode="idle"}[1m])))',
    "memory": "100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)",
    "disk": f"100 * (1 - node_filesystem_avail_bytes{{{_REAL_FS}}} / node_filesystem_size_bytes{{{_REAL_FS}}})",
    "response_time_p95": m.latency_p95_ms(),
    "error_rate": m.error_rate_percent(),
    "unhealthy_hosts": f'sum(haproxy_server_status{{{_FLEET}, state="DOWN"}})',
    "healthy_hosts_below_normal": _HEALTHY,
    "no_healthy_hosts": _HEALTHY,
    "db_replica_lag": "max(pg_replication_lag)",
    "inference_time": m.inference_p95_s(),
    "processing_lag": m.processing_lag_s(),
    "auth_failure_rate": m.auth_failure_rate_percent(),
    "dlq_not_empty": m.dead_letters(),
}
# How long a breach must hold before the alert fires; one breaching sample is enough where the CloudWatch
# alarm evaluates a single period (infra/alarms.py: evaluation_periods=1).
DEFAULT_FOR = "1m"
FOR = {"dlq_not_empty": "0s"}


@dataclass(frozen=True)
class Rule:
    alarm: Alarm
    expr: str
    for_: str = DEFAULT_FOR

    @property
    def alarm_name(self) -> str:
        return self.alarm.name(Target.PROMETHEUS, STACK)

    @property
    def alert(self) -> str:
        return self.alarm_name

    @property
    def key(self) -> str:
        return self.alarm.key

    @property
    def severity(self) -> str:
        return self.alarm.severity

    @property
    def threshold(self) -> float:
        return self.alarm.threshold

    @property
    def summary(self) -> str:
        return f"{self.alarm.signal.description} {self.alarm.comparison} {self.threshold:g} ({self.alarm.baseline})"


def local_alarms(baselines: Baselines) -> list[Alarm]:
    """The catalogue's entries for the local stack (Patroni keeps a streaming replica)."""
    return for_target(catalogue(baselines, db_replica=True), Target.PROMETHEUS)


def _expression(signal: str) -> str:
    try:
        return EXPRESSIONS[signal]
    except KeyError:
        raise CatalogueError(
            f"catalogue signal {signal} has no Prometheus expression: add one to EXPRESSIONS in {__file__}"
        ) from None


def rules(baselines: Baselines) -> list[Rule]:
    return [
        Rule(a, f"{_expression(a.signal.name)} {a.comparison} {a.threshold:g}", FOR.get(a.signal.name, DEFAULT_FOR))
        for a in local_alarms(baselines)
    ]
