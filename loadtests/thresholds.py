"""k6-style thresholds, from the numbers file: global and per endpoint, each with its severity.

- ``normal`` (000 Performance Baselines): average response time < ``normal.response_time_avg_ms.max``,
  error ratio < ``normal.error_rate_percent.max``;
- ``warning`` / ``critical`` (000 Critical Thresholds): p95 < ``thresholds.response_time_p95_ms``, error ratio
  < ``thresholds.error_rate_percent``;
- an optional minimum throughput (requests/s over the judged window).

``--fail-on LEVEL`` fails a run on a missed threshold of that severity or above (normal < warning <
critical). A p95 is judged on its 1 ms bucket: it passes only when the whole bucket is under the limit, so a
whole-millisecond limit is judged exactly. Pure: no Locust.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from loadtests.recording import ALL, Stats
from pynomaly_ops.baselines import SEVERITIES, Baselines

Level = Literal["normal", "warning", "critical"]
LEVELS: tuple[Level, ...] = ("normal", "warning", "critical")
Metric = Literal["avg_ms", "p95_ms", "error_percent", "throughput_per_s"]


def at_least(severity: str, fail_on: str) -> bool:
    """Whether a missed threshold of ``severity`` fails a run that fails on ``fail_on``."""
    return LEVELS.index(severity) >= LEVELS.index(fail_on)


@dataclass(frozen=True)
class Threshold:
    metric: Metric
    limit: float
    severity: Level
    source: str  # the baselines.yaml key, or the command-line option
    scope: str = ALL  # an endpoint's name, or "all"

    @property
    def name(self) -> str:
        comparison = ">=" if self.metric == "throughput_per_s" else "<"
        return f"{self.scope} {self.metric} {comparison} {self.limit:g} ({self.severity})"

    def for_scope(self, scope: str) -> Threshold:
        return Threshold(self.metric, self.limit, self.severity, self.source, scope)


@dataclass(frozen=True)
class Result:
    threshold: Threshold
    measured: float | None
    passed: bool
    requests: int
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.threshold.name,
            **asdict(self.threshold),
            "measured": self.measured,
            "passed": self.passed,
            "requests": self.requests,
            "detail": self.detail,
        }

    def message(self) -> str:
        t = self.threshold
        measured = "no data" if self.measured is None else f"{self.measured:.4g}"
        return f"{t.scope} {t.metric}: measured {measured}, limit {t.limit:g} ({t.severity}, {t.source}){self.detail}"


def catalogue(b: Baselines, min_throughput_per_s: float | None = None) -> list[Threshold]:
    """The global thresholds; :func:`per_endpoint` repeats the latency and error ones per endpoint."""
    out = [
        Threshold("avg_ms", b.normal.response_time_avg_ms.max, "normal", "normal.response_time_avg_ms.max"),
        Threshold("error_percent", b.normal.error_rate_percent.max, "normal", "normal.error_rate_percent.max"),
    ]
    for severity in SEVERITIES:
        out.append(
            Threshold(
                "p95_ms",
                b.thresholds.response_time_p95_ms.at(severity),
                severity,
                f"thresholds.response_time_p95_ms.{severity}",
            )
        )
        out.append(
            Threshold(
                "error_percent",
                b.thresholds.error_rate_percent.at(severity),
                severity,
                f"thresholds.error_rate_percent.{severity}",
            )
        )
    if min_throughput_per_s is not None:
        out.append(Threshold("throughput_per_s", min_throughput_per_s, "warning", "--min-throughput"))
    return out


def per_endpoint(thresholds: list[Threshold], names: list[str]) -> list[Threshold]:
    """The global thresholds, then each latency and error threshold again for every endpoint."""
    scoped = [t.for_scope(n) for n in names for t in thresholds if t.metric != "throughput_per_s"]
    return [*thresholds, *scoped]


def evaluate(t: Threshold, stats: Stats, seconds: float) -> Result:
    """``stats`` are the requests of ``t.scope`` in the judged window, which lasted ``seconds``."""
    if stats.requests == 0:
        return Result(t, None, False, 0, ": no requests in the judged window")
    if t.metric == "avg_ms":
        avg = stats.avg_ms or 0.0
        return Result(t, avg, avg < t.limit, stats.requests)
    if t.metric == "error_percent":
        return Result(t, stats.error_percent, stats.error_percent < t.limit, stats.requests)
    if t.metric == "throughput_per_s":
        rate = stats.requests / seconds if seconds > 0 else 0.0
        return Result(t, rate, rate >= t.limit, stats.requests)
    found = stats.percentile_range(0.95)
    assert found is not None
    low, high = found
    # The true p95 is in [low, high): it is under the limit for certain only when high <= limit.
    return Result(t, float(low), high <= t.limit, stats.requests, f" (bucket {low}-{high} ms)")


def failing(results: list[Result], fail_on: str) -> list[Result]:
    return [r for r in results if not r.passed and at_least(r.threshold.severity, fail_on)]


def critical_crossed(stats: Stats, b: Baselines) -> str | None:
    """The abort guard's test on one slice of the run: which critical threshold it crossed, if any."""
    if stats.requests == 0:
        return None
    for t in catalogue(b):
        if t.severity == "critical" and t.metric in ("p95_ms", "error_percent"):
            r = evaluate(t, stats, 1.0)
            if not r.passed:
                return r.message()
    return None


def within_warning(stats: Stats, b: Baselines) -> list[Result]:
    """The warning-level latency and error thresholds missed by ``stats`` (a step of ``step``)."""
    chosen = [t for t in catalogue(b) if t.severity == "warning" and t.metric in ("p95_ms", "error_percent")]
    return [r for r in (evaluate(t, stats, 1.0) for t in chosen) if not r.passed]
