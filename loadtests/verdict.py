"""A run's verdict from its recording: valid or not, thresholds met or not, the knee of ``step``, the drift of
``soak``, and the exit code.

Exit codes: 0 pass; 3 a threshold of the ``--fail-on`` severity or above was missed (or the abort guard
stopped the run); 4 the run is invalid (Locust's CPU warning fired: the generator saturated; or less than
:data:`MIN_ACHIEVED_RATIO` of the offered requests were sent: the open model's schedule was not kept), so
its figures say nothing about the target. Pure: no Locust.
"""

from __future__ import annotations

from typing import Any

from loadtests import thresholds as th
from loadtests.recording import ALL, Recording
from loadtests.shapes import Shape
from pynomaly_ops.baselines import Baselines

PASS, THRESHOLD_MISSED, USAGE, INVALID = 0, 3, 2, 4
MIN_ACHIEVED_RATIO = 0.95
DRIFT_PARTS = 10  # soak: the first and last tenth of the judged window are compared


def _achieved(rec: Recording, start: float, end: float) -> dict[str, Any]:
    p = rec.pace_window(start, end)
    ratio = p.sent / p.offered if p.offered else 0.0
    seconds = max(1e-9, end - start)
    return {
        "offered": p.offered,
        "sent": p.sent,
        "dropped": p.dropped,
        "offered_per_s": p.offered / seconds,
        "achieved_per_s": p.sent / seconds,
        "achieved_ratio": ratio,
        "max_late_ms": p.max_late_ms,
    }


def steps(rec: Recording, shape: Shape, b: Baselines, upto: float | None = None) -> dict[str, Any]:
    """Each step that ran to its end by ``upto`` (default: the end of the recording) judged on its own (its
    first seconds excluded: the step's transient); the knee is the highest rate of the steps before the
    first that broke a warning threshold or missed its rate."""
    rows, knee, broke = [], None, None
    settle = min(5.0, b.load.step_s / 4)
    upto = rec.last_second() + 1 if upto is None else upto
    for start, end, stage in shape.windows():
        if stage.label == "ramp-up":
            continue
        if end > upto + 1e-9:
            break
        stats = rec.window(start + settle, end)
        achieved = _achieved(rec, start + settle, end)
        missed = [r.message() for r in th.within_warning(stats, b)]
        if achieved["achieved_ratio"] < MIN_ACHIEVED_RATIO:
            missed.append(f"achieved {100 * achieved['achieved_ratio']:.1f} % of the offered rate")
        rows.append(
            {
                "step": stage.label,
                "rate_per_s": stage.rate_per_s,
                "requests": stats.requests,
                "p95_ms": stats.percentile_ms(0.95),
                "avg_ms": stats.avg_ms,
                "error_percent": stats.error_percent,
                **achieved,
                "held": not missed,
                "missed": missed,
            }
        )
        if missed:
            broke = stage.rate_per_s
            break
        knee = stage.rate_per_s
    return {"steps": rows, "knee_per_s": knee, "broke_at_per_s": broke}


def _drift(rec: Recording, start: float, end: float) -> dict[str, Any]:
    part = (end - start) / DRIFT_PARTS
    first, last = rec.window(start, start + part), rec.window(end - part, end)
    p_first, p_last = first.percentile_ms(0.95), last.percentile_ms(0.95)
    return {
        "p95_first_ms": p_first,
        "p95_last_ms": p_last,
        "p95_drift_ms": None if p_first is None or p_last is None else p_last - p_first,
        "avg_first_ms": first.avg_ms,
        "avg_last_ms": last.avg_ms,
    }


def judge(
    rec: Recording,
    shape: Shape,
    b: Baselines,
    fail_on: str | None = None,
    min_throughput_per_s: float | None = None,
) -> dict[str, Any]:
    """The verdict as a JSON-able dict; ``exit_code`` and ``message`` say it in one line."""
    fail_on = fail_on or shape.default_fail_on
    meta = rec.meta
    end = min(shape.duration_s, float(rec.last_second() + 1))
    start = min(shape.ramp_up_s, end)
    if meta.get("stopped_at_s") is not None:
        end = min(end, float(meta["stopped_at_s"]))
    seconds = max(0.0, end - start)
    achieved = _achieved(rec, start, end)
    names = [n for n in rec.names() if rec.window(start, end, n).requests]
    chosen = th.per_endpoint(th.catalogue(b, min_throughput_per_s), names)
    # A step shape is judged by its steps (and its knee): its whole window includes the step that broke.
    results = [] if shape.judged_by_step else [th.evaluate(t, rec.window(start, end, t.scope), seconds) for t in chosen]
    overall = rec.window(start, end)

    invalid = []
    if meta.get("cpu_warning"):
        invalid.append("Locust's CPU warning fired: the load generator saturated (add --workers)")
    if overall.requests == 0:
        invalid.append("no request was recorded in the judged window")
    stepped = steps(rec, shape, b, meta.get("stopped_at_s")) if shape.judged_by_step else None
    if stepped is None and achieved["offered"] and achieved["achieved_ratio"] < MIN_ACHIEVED_RATIO:
        invalid.append(
            f"achieved rate {achieved['achieved_per_s']:.2f}/s is {100 * achieved['achieved_ratio']:.1f} % of the "
            f"offered {achieved['offered_per_s']:.2f}/s (at least {100 * MIN_ACHIEVED_RATIO:g} % needed): "
            f"{achieved['dropped']} requests found no free user within their late tolerance"
        )

    missed = [r.message() for r in th.failing(results, fail_on)]
    knee_result = None
    if stepped is not None:
        peak = shape.normal_rate_per_s * b.traffic.peak_multiplier
        knee = stepped["knee_per_s"]
        knee_result = {
            "name": f"capacity knee >= peak {peak:g}/s (warning)",
            "metric": "knee_per_s",
            "limit": peak,
            "severity": "warning",
            "source": "traffic.peak_multiplier x load.normal_rate_per_s",
            "scope": ALL,
            "measured": knee,
            "passed": knee is not None and knee >= peak,
            "requests": overall.requests,
            "detail": "" if stepped["broke_at_per_s"] is not None else " (no step broke: the knee is above the last)",
        }
        if not knee_result["passed"] and th.at_least("warning", fail_on):
            missed.append(f"capacity knee: measured {knee}/s, limit {peak:g}/s (warning, {knee_result['source']})")
    if meta.get("aborted"):
        missed.insert(0, f"aborted by the guard: {meta['aborted']}")

    if invalid:
        code, message = INVALID, "INVALID: " + "; ".join(invalid)
    elif missed:
        code, message = THRESHOLD_MISSED, "FAIL: " + "; ".join(missed)
    else:
        code, message = PASS, "PASS"
    verdict: dict[str, Any] = {
        "shape": shape.name,
        "description": shape.description,
        "normal_rate_per_s": shape.normal_rate_per_s,
        "fail_on": fail_on,
        "judged_window_s": [start, end],
        "requests": overall.requests,
        "failures": overall.failures,
        "expected_4xx": overall.expected_4xx,
        "avg_ms": overall.avg_ms,
        "p50_ms": overall.percentile_ms(0.50),
        "p95_ms": overall.percentile_ms(0.95),
        "p99_ms": overall.percentile_ms(0.99),
        "error_percent": overall.error_percent,
        **achieved,
        "valid": not invalid,
        "invalid_reasons": invalid,
        "thresholds": [r.as_dict() for r in results] + ([knee_result] if knee_result else []),
        "missed": missed,
        "aborted": meta.get("aborted"),
        "exit_code": code,
        "message": message,
        "meta": meta,
    }
    if stepped is not None:
        verdict |= stepped
    if shape.name == "soak":
        verdict["drift"] = _drift(rec, start, end)
    return verdict
