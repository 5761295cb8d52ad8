"""The Kubernetes side of the alarm catalogue: a PrometheusRule's ``spec`` for the workload.

Every catalogue entry meant for Kubernetes becomes one rule named ``Pynomaly<Signal><Severity>`` with the
numbers file's value; an entry this module has no expression for is an error. The service's PromQL comes
from pynomaly_ops/metrics.py (shared with the local stack's rules); the cluster's metrics are
kube-state-metrics' and cAdvisor's, as the Prometheus operator's usual stack scrapes them.
"""

from __future__ import annotations

from typing import Any

from pynomaly_ops import metrics as m
from pynomaly_ops.alarms import Alarm, CatalogueError, Target, catalogue, for_target
from pynomaly_ops.baselines import Baselines

FOR = "5m"
RESTART_WINDOW = "1h"
# Groups: the pods' health, then what users see of the service.
POD_SIGNALS = ("pods_below_minimum", "pod_restarts", "cpu", "memory")


def _per_pod_of_limit(usage: str, resource: str, api: str) -> str:
    return (
        f"100 * sum by (pod) ({usage}) "
        f'/ sum by (pod) (kube_pod_container_resource_limits{{{api}, resource="{resource}"}})'
    )


def expressions(namespace: str, api_deployment: str) -> dict[str, str]:
    """What each signal measures on the cluster, as a PromQL value compared with its threshold."""
    ns = f'namespace="{namespace}"'
    api = f'{ns}, container="api"'
    return {
        "pods_below_minimum": (
            f'sum(kube_deployment_status_replicas_available{{{ns}, deployment="{api_deployment}"}})'
        ),
        "pod_restarts": f"increase(kube_pod_container_status_restarts_total{{{ns}}}[{RESTART_WINDOW}])",
        "cpu": _per_pod_of_limit(f"rate(container_cpu_usage_seconds_total{{{api}}}[{m.RATE_WINDOW}])", "cpu", api),
        "memory": _per_pod_of_limit(f"container_memory_working_set_bytes{{{api}}}", "memory", api),
        "response_time_p95": m.latency_p95_ms(ns),
        "error_rate": m.error_rate_percent(ns),
        "inference_time": m.inference_p95_s(ns),
        "processing_lag": m.processing_lag_s(ns),
        "auth_failure_rate": m.auth_failure_rate_percent(ns),
    }


def _rule(alarm: Alarm, expr: str) -> dict[str, Any]:
    return {
        "alert": alarm.name(Target.KUBERNETES, ""),
        "expr": f"{expr} {alarm.comparison} {alarm.threshold:g}",
        "for": "0m" if alarm.signal.name == "pod_restarts" else FOR,
        "labels": {"severity": alarm.severity, "service": "pynomaly", "alarm_key": alarm.key},
        "annotations": {"summary": f"{alarm.signal.description} {alarm.comparison} {alarm.threshold:g}"},
    }


def rule_groups(namespace: str, api_deployment: str, baselines: Baselines) -> list[dict[str, Any]]:
    exprs = expressions(namespace, api_deployment)
    alarms = for_target(catalogue(baselines), Target.KUBERNETES)
    missing = sorted({a.signal.name for a in alarms} - set(exprs))
    if missing:
        raise CatalogueError(f"catalogue entries with no Kubernetes expression: {', '.join(missing)}; see {__file__}")
    rules = [_rule(a, exprs[a.signal.name]) for a in alarms]
    pods = [r for r, a in zip(rules, alarms, strict=True) if a.signal.name in POD_SIGNALS]
    service = [r for r, a in zip(rules, alarms, strict=True) if a.signal.name not in POD_SIGNALS]
    return [{"name": "pynomaly-pods", "rules": pods}, {"name": "pynomaly-service", "rules": service}]
