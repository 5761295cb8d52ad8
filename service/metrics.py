"""The service's Prometheus metrics, registered under the names in pynomaly_ops/metrics.py.

Histogram buckets include the runbook thresholds (from ``baselines.yaml``) so alarm quantiles land on a
bucket edge.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

from pynomaly_ops import metrics as names
from pynomaly_ops.baselines import load

_b = load()

HTTP_REQUESTS = Counter(names.HTTP_REQUESTS, "HTTP requests by route, method and status", ["route", "method", "status"])
HTTP_DURATION = Histogram(
    names.HTTP_DURATION,
    "HTTP request latency by route and method",
    ["route", "method"],
    buckets=names.latency_buckets_s(_b),
)
HTTP_IN_FLIGHT = Gauge(names.HTTP_IN_FLIGHT, "HTTP requests being served, by method", ["method"])
INFERENCE_DURATION = Histogram(
    names.INFERENCE_DURATION, "Detector fit and score time", buckets=names.inference_buckets_s(_b)
)
JOB_PROCESSING_LAG = Gauge(names.JOB_PROCESSING_LAG, "Seconds from job submission to pick-up by a worker (0 when idle)")
AUTH_FAILURES = Counter(names.AUTH_FAILURES, "Requests to /api/v1 refused for a missing, unknown or revoked key")
AUTH_REQUESTS = Counter(names.AUTH_REQUESTS, "Requests to /api/v1 whose key was checked")
DB_POOL = Gauge(names.DB_POOL, "Database pool connections by state", ["state"])
CACHE_REQUESTS = Counter(names.CACHE_REQUESTS, "Result cache look-ups by result", ["result"])
QUEUE_SENT = Counter(names.QUEUE_SENT, "Job messages sent to the queue")
DETECTIONS_FLAGGED = Counter(names.DETECTIONS_FLAGGED, "Points flagged as anomalous")
JOBS = Counter(names.JOBS, "Batch jobs finished by the worker, by outcome", ["status"])
INSTANCE = Info(names.INSTANCE, "Which service instance exposes these metrics")

for _result in ("hit", "miss", "error"):
    CACHE_REQUESTS.labels(result=_result)
for _status in ("completed", "failed"):
    JOBS.labels(status=_status)
