"""Prometheus alerting rules generated from the runbook-numbers file.

Every warning/critical level in baselines.yaml and every application alarm
becomes one rule; a level this module has no expression for is an error,
so a number added to the file cannot silently go unwatched.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from pynomaly_ops.baselines import SEVERITIES, Baselines, Level
from pynomaly_ops.naming import resource_name
from service import metrics as m

STACK = "local"
RATE = "5m"
# Host figures come from node_exporter (the CloudWatch agent's stand-in).
_REAL_FS = 'fstype!~"tmpfs|ramfs|devtmpfs|squashfs|nsfs|proc|sysfs"'

# What each baselines key measures, as a PromQL value compared with the number.
EXPRESSIONS: dict[str, str] = {
    "thresholds.cpu_percent": '100 * (1 - avg(rate(node_cpu_seconds_total{mode="idle"}[1m])))',
    "thresholds.memory_percent": "100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)",
    "thresholds.disk_percent": (
        f"100 * (1 - node_filesystem_avail_bytes{{{_REAL_FS}}} / node_filesystem_size_bytes{{{_REAL_FS}}})"
    ),
    "thresholds.response_time_p95_ms": (
        f"1000 * histogram_quantile(0.95, sum by (le) (rate({m.HTTP_DURATION_NAME}_bucket[{RATE}])))"
    ),
    "thresholds.error_rate_percent": (
        f'100 * sum(rate({m.HTTP_REQUESTS_NAME}{{status=~"5.."}}[{RATE}])) / sum(rate({m.HTTP_REQUESTS_NAME}[{RATE}]))'
    ),
    "database.replica_lag_s": "max(pg_replication_lag)",
    "app_alarms.inference_time_s": (
        f"histogram_quantile(0.95, sum by (le) (rate({m.INFERENCE_DURATION_NAME}_bucket[{RATE}])))"
    ),
    "app_alarms.processing_lag_s": f"max({m.JOB_PROCESSING_LAG_NAME})",
    "app_alarms.auth_failure_rate_percent": (
        f"100 * sum(rate({m.AUTH_FAILURES_NAME}[{RATE}])) / sum(rate({m.AUTH_REQUESTS_NAME}[{RATE}]))"
    ),
}
APP_ALARM_SEVERITY = "warning"


class RulesError(ValueError):
    """A number in baselines.yaml has no Prometheus expression."""


@dataclass(frozen=True)
class Rule:
    key: str  # dotted baselines key, e.g. thresholds.cpu_percent
    severity: str
    threshold: float
    expr: str
    for_: str = "1m"

    @property
    def alarm_name(self) -> str:
        return resource_name(STACK, "alarm", f"{self.key.split('.')[-1].replace('_', '-')}-{self.severity}")

    @property
    def alert(self) -> str:
        return self.alarm_name

    @property
    def summary(self) -> str:
        return f"{self.key} above {self.threshold:g} ({self.severity})"


def _levels(model: BaseModel, prefix: str = "") -> dict[str, Level]:
    """Every warning/critical pair in the file, by dotted key, wherever it sits."""
    found: dict[str, Level] = {}
    for name, value in model:
        key = f"{prefix}{name}"
        if isinstance(value, Level):
            found[key] = value
        elif isinstance(value, BaseModel):
            found |= _levels(value, key + ".")
    return found


def _expression(key: str) -> str:
    try:
        return EXPRESSIONS[key]
    except KeyError:
        raise RulesError(
            f"baselines key {key} has no Prometheus expression: add one to EXPRESSIONS in {__file__}"
        ) from None


def rules(baselines: Baselines) -> list[Rule]:
    out = [
        Rule(key, severity, level.at(severity), f"{_expression(key)} > {level.at(severity):g}")
        for key, level in _levels(baselines).items()
        for severity in SEVERITIES
    ]
    for name, value in baselines.app_alarms:
        if name == "source":
            continue
        key = f"app_alarms.{name}"
        out.append(Rule(key, APP_ALARM_SEVERITY, value, f"{_expression(key)} > {value:g}"))
    return out


def alarm_names(baselines: Baselines) -> list[str]:
    return [r.alarm_name for r in rules(baselines)]
