"""The service's metric names, and the PromQL over them that every Prometheus target shares.

service/metrics.py registers the metrics under these names; the CloudWatch agent scrapes them
(infra/app_fleet.py); the local stack's rules and the Kubernetes PrometheusRule (infra/alert_rules.py)
query them through the expressions below, with their own label selector.
"""

from __future__ import annotations

from pynomaly_ops.baselines import Baselines

HTTP_REQUESTS = "pynomaly_http_requests_total"
HTTP_DURATION = "pynomaly_http_request_duration_seconds"
HTTP_IN_FLIGHT = "pynomaly_http_requests_in_flight"
INFERENCE_DURATION = "pynomaly_inference_duration_seconds"
JOB_PROCESSING_LAG = "pynomaly_job_processing_lag_seconds"
AUTH_FAILURES = "pynomaly_auth_failures_total"
AUTH_REQUESTS = "pynomaly_auth_requests_total"
DB_POOL = "pynomaly_db_pool_connections"
CACHE_REQUESTS = "pynomaly_cache_requests_total"
QUEUE_SENT = "pynomaly_queue_messages_sent_total"
DETECTIONS_FLAGGED = "pynomaly_detections_flagged_total"
JOBS = "pynomaly_jobs_total"
INSTANCE = "pynomaly_instance"
# The local stack's SQS stand-in (local/moto_server.py) publishes what CloudWatch's AWS/SQS namespace does
# for ApproximateNumberOfMessagesVisible / NotVisible, labelled with the queue's name and role.
QUEUE_VISIBLE = "pynomaly_sqs_messages_visible"
QUEUE_IN_FLIGHT = "pynomaly_sqs_messages_in_flight"
JOBS_QUEUE, DEAD_LETTER_QUEUE = "jobs", "dead_letters"  # the role label

DEFAULT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RATE_WINDOW = "5m"


def _with_edges(*edges_s: float) -> tuple[float, ...]:
    return (*sorted({*DEFAULT_BUCKETS_S, *edges_s}), float("inf"))


def latency_buckets_s(b: Baselines) -> tuple[float, ...]:
    """HTTP latency buckets with the p95 thresholds as edges, so alarm quantiles land on a bucket edge."""
    return _with_edges(*(level / 1000 for level in b.thresholds.response_time_p95_ms.model_dump().values()))


def inference_buckets_s(b: Baselines) -> tuple[float, ...]:
    return _with_edges(b.app_alarms.inference_time_s)


# --- PromQL over the service's metrics, for any label selector (e.g. 'namespace="pynomaly"') -----------------
def _sel(selector: str, extra: str = "") -> str:
    matchers = ", ".join(s for s in (selector, extra) if s)
    return "{" + matchers + "}" if matchers else ""


def _rate(metric: str, selector: str, extra: str = "", window: str = RATE_WINDOW) -> str:
    return f"sum(rate({metric}{_sel(selector, extra)}[{window}]))"


def latency_p95_ms(selector: str = "", window: str = RATE_WINDOW) -> str:
    return f"1000 * histogram_quantile(0.95, sum by (le) (rate({HTTP_DURATION}_bucket{_sel(selector)}[{window}])))"


def error_rate_percent(selector: str = "", window: str = RATE_WINDOW) -> str:
    errors = _rate(HTTP_REQUESTS, selector, 'status=~"5.."', window)
    return f"100 * {errors} / {_rate(HTTP_REQUESTS, selector, window=window)}"


def inference_p95_s(selector: str = "", window: str = RATE_WINDOW) -> str:
    return f"histogram_quantile(0.95, sum by (le) (rate({INFERENCE_DURATION}_bucket{_sel(selector)}[{window}])))"


def processing_lag_s(selector: str = "") -> str:
    return f"max({JOB_PROCESSING_LAG}{_sel(selector)})"


def dead_letters() -> str:
    return f'max({QUEUE_VISIBLE}{{role="{DEAD_LETTER_QUEUE}"}})'


def auth_failure_rate_percent(selector: str = "", window: str = RATE_WINDOW) -> str:
    return f"100 * {_rate(AUTH_FAILURES, selector, window=window)} / {_rate(AUTH_REQUESTS, selector, window=window)}"
