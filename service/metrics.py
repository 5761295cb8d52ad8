"""The service's Prometheus metrics, each name defined once.

The local stack's Prometheus rules and the CloudWatch app alarms import the
``*_NAME`` constants from here rather than typing the names. Histogram buckets
include the runbook thresholds (from ``baselines.yaml``) so alarm quantiles land
on a bucket edge.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

from pynomaly_ops.baselines import load

HTTP_REQUESTS_NAME = "pynomaly_http_requests_total"
HTTP_DURATION_NAME = "pynomaly_http_request_duration_seconds"
HTTP_IN_FLIGHT_NAME = "pynomaly_http_requests_in_flight"
INFERENCE_DURATION_NAME = "pynomaly_inference_duration_seconds"
JOB_PROCESSING_LAG_NAME = "pynomaly_job_processing_lag_seconds"
AUTH_FAILURES_NAME = "pynomaly_auth_failures_total"
AUTH_REQUESTS_NAME = "pynomaly_auth_requests_total"
DB_POOL_NAME = "pynomaly_db_pool_connections"
CACHE_REQUESTS_NAME = "pynomaly_cache_requests_total"
QUEUE_SENT_NAME = "pynomaly_queue_messages_sent_total"
DETECTIONS_FLAGGED_NAME = "pynomaly_detections_flagged_total"
JOBS_NAME = "pynomaly_jobs_total"
INSTANCE_NAME = "pynomaly_instance"

_DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _buckets(*edges_s: float) -> tuple[float, ...]:
    return (*sorted({*_DEFAULT_BUCKETS, *edges_s}), float("inf"))


_b = load()
_LATENCY_BUCKETS = _buckets(*(level / 1000 for level in _b.thresholds.response_time_p95_ms.model_dump().values()))
_INFERENCE_BUCKETS = _buckets(_b.app_alarms.inference_time_s)

HTTP_REQUESTS = Counter(HTTP_REQUESTS_NAME, "HTTP requests by route, method and status", ["route", "method", "status"])
HTTP_DURATION = Histogram(
    HTTP_DURATION_NAME, "HTTP request latency by route and method", ["route", "method"], buckets=_LATENCY_BUCKETS
)
HTTP_IN_FLIGHT = Gauge(HTTP_IN_FLIGHT_NAME, "HTTP requests being served, by method", ["method"])
INFERENCE_DURATION = Histogram(INFERENCE_DURATION_NAME, "Detector fit and score time", buckets=_INFERENCE_BUCKETS)
JOB_PROCESSING_LAG = Gauge(JOB_PROCESSING_LAG_NAME, "Seconds from job submission to pick-up by a worker (0 when idle)")
AUTH_FAILURES = Counter(AUTH_FAILURES_NAME, "Requests to /api/v1 refused for a missing, unknown or revoked key")
AUTH_REQUESTS = Counter(AUTH_REQUESTS_NAME, "Requests to /api/v1 whose key was checked")
DB_POOL = Gauge(DB_POOL_NAME, "Database pool connections by state", ["state"])
CACHE_REQUESTS = Counter(CACHE_REQUESTS_NAME, "Result cache look-ups by result", ["result"])
QUEUE_SENT = Counter(QUEUE_SENT_NAME, "Job messages sent to the queue")
DETECTIONS_FLAGGED = Counter(DETECTIONS_FLAGGED_NAME, "Points flagged as anomalous")
JOBS = Counter(JOBS_NAME, "Batch jobs finished by the worker, by outcome", ["status"])
INSTANCE = Info(INSTANCE_NAME, "Which service instance exposes these metrics")

for _result in ("hit", "miss", "error"):
    CACHE_REQUESTS.labels(result=_result)
for _status in ("completed", "failed"):
    JOBS.labels(status=_status)
