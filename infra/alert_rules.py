"""Prometheus alerting rules for the Kubernetes side of the workload (a PrometheusRule's ``spec``).

Every threshold comes from baselines.yaml; metric names come from
service/metrics.py (the service's) or kube-state-metrics / cAdvisor (the
cluster's, as the Prometheus operator's usual stack scrapes them).
"""

from __future__ import annotations

from typing import Any

from pynomaly_ops.baselines import SEVERITIES, Baselines
from service.metrics import (
    AUTH_FAILURES_NAME,
    AUTH_REQUESTS_NAME,
    HTTP_DURATION_NAME,
    HTTP_REQUESTS_NAME,
    INFERENCE_DURATION_NAME,
    JOB_PROCESSING_LAG_NAME,
)

RATE_WINDOW = "5m"
RESTART_WINDOW = "1h"
SERVER_ERRORS = ', status=~"5.."'


def _rule(alert: str, expr: str, severity: str, summary: str, for_: str = "5m") -> dict[str, Any]:
    return {
        "alert": alert,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, "service": "pynomaly"},
        "annotations": {"summary": summary},
    }


def _leveled(alert: str, expr: str, level: Any, unit: str, what: str) -> list[dict[str, Any]]:
    """One rule per severity of a warning/critical pair from baselines.yaml."""
    return [
        _rule(f"{alert}{sev.capitalize()}", f"{expr} > {level.at(sev):g}", sev, f"{what} above {level.at(sev):g}{unit}")
        for sev in SEVERITIES
    ]


def rule_groups(namespace: str, api_deployment: str, baselines: Baselines) -> list[dict[str, Any]]:
    ns = f'namespace="{namespace}"'
    api = f'{ns}, container="api"'
    t, app = baselines.thresholds, baselines.app_alarms
    pods = [
        _rule(
            "PynomalyPodsBelowMinimum",
            f'sum(kube_deployment_status_replicas_available{{{ns}, deployment="{api_deployment}"}}) '
            f"< {baselines.scaling.pods_min}",
            "critical",
            f"fewer than {baselines.scaling.pods_min} API pods available in {namespace}",
        ),
        _rule(
            "PynomalyPodRestarts",
            f"increase(kube_pod_container_status_restarts_total{{{ns}}}[{RESTART_WINDOW}]) > 0",
            "warning",
            "a Pynomaly container restarted in the last hour",
            for_="0m",
        ),
        *_leveled(
            "PynomalyPodCpu",
            f"100 * sum by (pod) (rate(container_cpu_usage_seconds_total{{{api}}}[{RATE_WINDOW}])) "
            f'/ sum by (pod) (kube_pod_container_resource_limits{{{api}, resource="cpu"}})',
            t.cpu_percent,
            "% of the CPU limit",
            "API pod CPU",
        ),
        *_leveled(
            "PynomalyPodMemory",
            f"100 * sum by (pod) (container_memory_working_set_bytes{{{api}}}) "
            f'/ sum by (pod) (kube_pod_container_resource_limits{{{api}, resource="memory"}})',
            t.memory_percent,
            "% of the memory limit",
            "API pod memory",
        ),
    ]
    rate = lambda metric, sel="": f"sum(rate({metric}{{{ns}{sel}}}[{RATE_WINDOW}]))"  # noqa: E731
    service = [
        *_leveled(
            "PynomalyLatencyP95",
            f"1000 * histogram_quantile(0.95, sum by (le) (rate({HTTP_DURATION_NAME}_bucket{{{ns}}}[{RATE_WINDOW}])))",
            t.response_time_p95_ms,
            " ms",
            "p95 response time",
        ),
        *_leveled(
            "PynomalyErrorRate",
            f"100 * {rate(HTTP_REQUESTS_NAME, SERVER_ERRORS)} / {rate(HTTP_REQUESTS_NAME)}",
            t.error_rate_percent,
            " %",
            "5xx error rate",
        ),
        _rule(
            "PynomalyInferenceSlow",
            f"histogram_quantile(0.95, sum by (le) (rate({INFERENCE_DURATION_NAME}_bucket{{{ns}}}[{RATE_WINDOW}]))) "
            f"> {app.inference_time_s:g}",
            "warning",
            f"p95 inference time above {app.inference_time_s:g} s",
        ),
        _rule(
            "PynomalyProcessingLag",
            f"max({JOB_PROCESSING_LAG_NAME}{{{ns}}}) > {app.processing_lag_s:g}",
            "warning",
            f"job processing lag above {app.processing_lag_s:g} s",
        ),
        _rule(
            "PynomalyAuthFailures",
            f"100 * {rate(AUTH_FAILURES_NAME)} / {rate(AUTH_REQUESTS_NAME)} > {app.auth_failure_rate_percent:g}",
            "warning",
            f"authentication failure rate above {app.auth_failure_rate_percent:g} %",
        ),
    ]
    return [{"name": "pynomaly-pods", "rules": pods}, {"name": "pynomaly-service", "rules": service}]
