"""Thresholds and verdicts on synthetic recordings: pass, warning, critical, invalid; exact p95 near the limits;
the step shape's knee; the recording merged from workers; JUnit and compare."""

from __future__ import annotations

import json
from xml.etree import ElementTree as ET

import pytest

from loadtests import report, verdict
from loadtests.recording import Recording, Stats, bucket
from loadtests.shapes import build
from pynomaly_ops.baselines import load

RATE = 10.0
DURATION = 40


@pytest.fixture(scope="module")
def b():
    return load()


def _recording(shape, latency_ms, fail_every: int = 0, sent_share: float = 1.0, name="POST /api/v1/detect"):
    """Every due request of ``shape``, answered in ``latency_ms(i)`` ms; one in ``fail_every`` failed."""
    rec = Recording(t0=1000.0)
    for i in range(shape.total_requests):
        due = shape.due(i)
        assert due is not None
        sent = (i % 100) < 100 * sent_share
        rec.offered(due, sent=sent)
        if sent:
            failed = bool(fail_every) and i % fail_every == 0
            rec.record(name, 1000.0 + due, latency_ms(i), failed)
    return rec


def _judge(rec, shape, b, **kw):
    return verdict.judge(rec, shape, b, **kw)


def test_a_fast_clean_run_passes_every_threshold(b):
    shape = build("normal", b, RATE, DURATION)
    v = _judge(_recording(shape, lambda i: 20 + i % 30), shape, b)
    assert v["exit_code"] == verdict.PASS and v["message"] == "PASS" and v["valid"]
    assert all(t["passed"] for t in v["thresholds"])
    assert {t["scope"] for t in v["thresholds"]} == {"all", "POST /api/v1/detect"}
    assert v["achieved_ratio"] == 1.0


def test_the_ramp_up_is_excluded(b):
    shape = build("normal", b, RATE, DURATION)
    slow_start = _recording(shape, lambda i: 5000 if (shape.due(i) or 0) < shape.ramp_up_s else 30)
    assert _judge(slow_start, shape, b)["exit_code"] == verdict.PASS


def test_a_p95_over_the_warning_fails_on_warning_and_names_threshold_limit_and_value(b):
    shape = build("peak", b, RATE, DURATION)
    v = _judge(_recording(shape, lambda i: 700 if i % 10 == 0 else 40), shape, b)  # 10 % at 700 ms
    assert v["exit_code"] == verdict.THRESHOLD_MISSED
    assert "all p95_ms: measured 700, limit 500 (warning, thresholds.response_time_p95_ms.warning)" in v["message"]
    assert "limit 1000" not in v["message"]  # the critical one held
    # the same run fails only on critical thresholds: it passes then
    assert (
        _judge(_recording(shape, lambda i: 700 if i % 10 == 0 else 40), shape, b, fail_on="critical")["exit_code"]
        == verdict.PASS
    )


def test_a_critical_error_rate_fails_even_with_fail_on_critical(b):
    shape = build("peak", b, RATE, DURATION)
    v = _judge(_recording(shape, lambda i: 30, fail_every=10), shape, b, fail_on="critical")  # 10 % failed
    assert v["exit_code"] == verdict.THRESHOLD_MISSED
    assert "error_percent: measured 10, limit 5 (critical" in v["message"]


def test_the_normal_baseline_fails_the_normal_shape_but_not_peak(b):
    """Average 250 ms misses normal.response_time_avg_ms.max (a normal-level threshold): the normal shape
    fails on it by default; peak fails on warnings and above by default."""
    normal, peak = build("normal", b, RATE, DURATION), build("peak", b, RATE, DURATION)
    assert _judge(_recording(normal, lambda i: 250), normal, b)["exit_code"] == verdict.THRESHOLD_MISSED
    assert _judge(_recording(peak, lambda i: 250), peak, b)["exit_code"] == verdict.PASS


def test_p95_is_judged_exactly_at_the_millisecond_near_the_limit(b):
    shape = build("peak", b, RATE, DURATION)
    just_under = _judge(_recording(shape, lambda i: 499.9 if i % 10 == 0 else 40), shape, b)
    at_limit = _judge(_recording(shape, lambda i: 500.0 if i % 10 == 0 else 40), shape, b)
    assert just_under["exit_code"] == verdict.PASS, just_under["message"]
    assert at_limit["exit_code"] == verdict.THRESHOLD_MISSED
    assert "bucket 500-501 ms" in at_limit["message"]


def test_a_run_that_did_not_keep_the_offered_rate_is_invalid_not_passed(b):
    shape = build("normal", b, RATE, DURATION)
    v = _judge(_recording(shape, lambda i: 30, sent_share=0.9), shape, b)
    assert v["exit_code"] == verdict.INVALID and not v["valid"]
    assert "of the offered" in v["message"] and "95 % needed" in v["message"]


def test_the_cpu_warning_makes_a_run_invalid_whatever_its_figures(b):
    shape = build("normal", b, RATE, DURATION)
    rec = _recording(shape, lambda i: 30)
    rec.meta["cpu_warning"] = True
    v = _judge(rec, shape, b)
    assert v["exit_code"] == verdict.INVALID and "CPU warning" in v["message"]


def test_an_aborted_run_fails_with_the_guards_reason(b):
    shape = build("normal", b, RATE, DURATION)
    rec = _recording(shape, lambda i: 30)
    rec.meta |= {"aborted": "a critical threshold held for 15s: all p95_ms ...", "stopped_at_s": 30}
    v = _judge(rec, shape, b)
    assert v["exit_code"] == verdict.THRESHOLD_MISSED and "aborted by the guard" in v["message"]


def test_step_reports_the_knee_at_the_last_step_that_held(b):
    shape = build("step", b, RATE)
    steps = [w for w in shape.windows() if w[2].label != "ramp-up"]
    breaking_start = steps[5][0]  # 3.5x normal breaks: latency over the warning level from there on

    rec = _recording(shape, lambda i: 900 if (shape.due(i) or 0) >= breaking_start else 30)
    v = _judge(rec, shape, b)
    assert v["knee_per_s"] == pytest.approx(steps[4][2].rate_per_s)  # 3x normal: the peak, just
    assert v["broke_at_per_s"] == pytest.approx(steps[5][2].rate_per_s)
    assert [s["held"] for s in v["steps"]] == [True] * 5 + [False]
    assert v["exit_code"] == verdict.PASS, v["message"]  # the knee covers the peak (3x)

    early = _recording(shape, lambda i: 900 if (shape.due(i) or 0) >= steps[2][0] else 30)
    v = _judge(early, shape, b)
    assert v["exit_code"] == verdict.THRESHOLD_MISSED
    assert "capacity knee: measured 15.0/s, limit 30/s" in v["message"]


def test_a_step_run_stopped_mid_step_judges_only_the_steps_that_ran_to_their_end(b):
    """The guard stopped the run part-way into a step: that step's few seconds are not a step's verdict (nor is
    the recording's tail after the stop)."""
    shape = build("step", b, RATE)
    steps = [w for w in shape.windows() if w[2].label != "ramp-up"]
    stop = (steps[2][0] + steps[2][1]) / 2  # halfway through the third step
    rec = _recording(shape, lambda i: 30)
    rec.meta["stopped_at_s"] = stop
    judged = verdict.steps(rec, shape, b, stop)["steps"]
    assert [s["rate_per_s"] for s in judged] == pytest.approx([w[2].rate_per_s for w in steps[:2]])
    assert len(verdict.judge(rec, shape, b)["steps"]) == 2


def test_percentiles_are_nearest_rank_on_1ms_buckets():
    s = Stats()
    for ms in range(1, 101):
        s.add(ms + 0.5, failed=False)
    assert s.percentile_range(0.95) == (95, 96) and s.percentile_ms(0.5) == 50
    assert bucket(4999.9) == 4999 and bucket(5000) == 5000 and bucket(5150) == 5100


def test_worker_deltas_merged_on_the_master_equal_one_recording(b):
    shape = build("normal", b, RATE, 20)
    whole = _recording(shape, lambda i: 10 + i % 97)
    workers = [Recording(t0=1000.0) for _ in range(2)]
    for i in range(shape.total_requests):
        due = shape.due(i)
        assert due is not None
        workers[i % 2].offered(due, sent=True)
        workers[i % 2].record("POST /api/v1/detect", 1000.0 + due, 10 + i % 97, False)
    master = Recording(t0=1000.0)
    for w in workers:
        # through JSON, as Locust's messages carry them
        master.merge_delta(json.loads(json.dumps(w.take_delta())))
    assert master.window().to_json() == whole.window().to_json()
    assert master.pace_window().to_json() == whole.pace_window().to_json()
    assert Recording.from_json(master.to_json()).window().hist == whole.window().hist


def test_junit_has_one_case_per_threshold_and_fails_those_that_fail_the_run(b):
    shape = build("peak", b, RATE, DURATION)
    v = _judge(_recording(shape, lambda i: 700 if i % 10 == 0 else 40), shape, b)
    suite = ET.fromstring(report.junit(v))
    cases = suite.findall("testcase")
    assert len(cases) == len(v["thresholds"]) + 1  # + run is valid
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == ["all p95_ms < 500 (warning)", "POST /api/v1/detect p95_ms < 500 (warning)"]
    assert suite.get("failures") == "2" and suite.get("errors") == "0"


def test_compare_flags_a_p95_or_throughput_regression_over_10_percent(b, tmp_path):
    shape = build("normal", b, RATE, DURATION)
    runs = {
        "base": _recording(shape, lambda i: 100),
        "same": _recording(shape, lambda i: 105),
        "slower": _recording(shape, lambda i: 120),
    }
    for name, rec in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "verdict.json").write_text(json.dumps(_judge(rec, shape, b)))
    assert not any(r["regression"] for r in report.compare(tmp_path / "base", tmp_path / "same"))
    flagged = [r["metric"] for r in report.compare(tmp_path / "base", tmp_path / "slower") if r["regression"]]
    assert "p95_ms" in flagged
    with pytest.raises(ValueError, match="not a load run's verdict"):
        report.compare(tmp_path / "base", tmp_path / "absent")
