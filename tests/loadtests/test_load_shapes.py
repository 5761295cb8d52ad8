"""The traffic shapes: levels from baselines.yaml, the open model's schedule, and what tick() returns."""

from __future__ import annotations

import itertools
import math

import pytest

from loadtests import shapes
from loadtests.shapes import ShapeError, build, parse_duration, tick
from pynomaly_ops.baselines import load

NORMAL = 10.0


@pytest.fixture(scope="module")
def b():
    return load()


def _judged_rates(shape: shapes.Shape) -> set[float]:
    return {round(s.rate_per_s, 6) for s in shape.stages if s.label != "ramp-up"}


def test_steady_shapes_hold_their_multiple_of_normal_from_the_numbers_file(b):
    t = b.traffic
    expected = {
        "normal": NORMAL,
        "peak": NORMAL * t.peak_multiplier,
        "weekend": NORMAL * t.weekend_fraction,
        "holiday": NORMAL * t.holiday_fraction,
        "soak": NORMAL,
    }
    for name, rate in expected.items():
        shape = build(name, b, NORMAL, 60)
        assert _judged_rates(shape) == {round(rate, 6)}, name
        assert shape.duration_s == pytest.approx(60)
        assert shape.rate_at(59.9) == pytest.approx(rate) and shape.rate_at(60) == 0


def test_the_ramp_up_rises_to_the_level_and_is_excluded_from_the_verdict(b):
    shape = build("peak", b, NORMAL, 60)
    assert shape.ramp_up_s == b.load.ramp_up_s
    ramp = [shape.rate_at(i + 0.5) for i in range(int(shape.ramp_up_s))]
    assert ramp == sorted(ramp) and ramp[0] < ramp[-1] < NORMAL * b.traffic.peak_multiplier


def test_the_schedule_is_open_model_due_times_follow_the_rate_not_the_latency(b):
    shape = build("normal", b, NORMAL, 40)
    dues = [shape.due(i) for i in range(shape.total_requests)]
    assert all(d is not None for d in dues) and dues == sorted(dues)
    assert shape.due(shape.total_requests) is None
    steady = [d for d in dues if d is not None and d >= shape.ramp_up_s]
    gaps = {round(b2 - a, 9) for a, b2 in itertools.pairwise(steady)}
    assert gaps == {round(1 / NORMAL, 9)}
    # the count due by t is the integral of the rate
    assert shape.offered_by(40) == pytest.approx(shape.total_requests, abs=1)
    assert sum(1 for d in dues if d is not None and d < 20) == math.ceil(shape.offered_by(20))


@pytest.mark.parametrize(("name", "rate"), [("normal", 1234.5), ("step", 37.0), ("spike", 333.0)])
@pytest.mark.parametrize(("index", "count"), [(0, 1), (1, 3)])
def test_a_generator_that_falls_behind_drops_the_same_requests_a_second_at_a_time(b, name, rate, index, count):
    """The bulk drop (Plan._drop_before) counts per due second exactly what dropping one by one would."""
    shape = build(name, b, rate, 60 if name != "step" else None)
    for start, t in [(index, 5.3), (index + 7 * count, 17.0), (index, shape.duration_s + 3)]:
        stop = shape.first_due_from(t)
        assert all(shape.due(i) < t for i in range(stop))  # type: ignore[operator]
        assert stop == shape.total_requests or shape.due(stop) >= t  # type: ignore[operator]
        one_by_one: dict[int, int] = {}
        for i in range(start, stop, count):
            second = int(shape.due(i))  # type: ignore[arg-type]
            one_by_one[second] = one_by_one.get(second, 0) + 1
        assert shape.due_per_second(start, stop, count) == one_by_one


def test_spike_jumps_to_the_peak_without_a_ramp_and_comes_back(b):
    shape = build("spike", b, NORMAL, 120)
    labels = [s.label for s in shape.stages if s.label != "ramp-up"]
    assert labels == ["before the spike", "spike", "after the spike"]
    start = next(w for w in shape.windows() if w[2].label == "spike")[0]
    assert shape.rate_at(start - 0.01) == NORMAL
    assert shape.rate_at(start) == NORMAL * b.traffic.peak_multiplier


def test_daily_is_peak_during_the_peak_hours_of_the_traffic_timezone(b):
    shape = build("daily", b, NORMAL, 240)
    peak = [s for s in shape.stages if s.label.endswith(" peak")]
    off = [s for s in shape.stages if s.label.endswith("off-peak")]
    assert {s.rate_per_s for s in peak} == {NORMAL * b.traffic.peak_multiplier}
    assert {s.rate_per_s for s in off} == {NORMAL}
    assert peak[0].label.startswith(b.traffic.peak_hours.start)
    # 09:00-17:00 is 8 hours: 16 half-hours of the compressed day
    assert len(peak) == 16 and shape.duration_s == pytest.approx(240)


def test_step_rises_by_the_factors_and_is_judged_step_by_step(b):
    shape = build("step", b, NORMAL)
    steps = [s for s in shape.stages if s.label != "ramp-up"]
    assert [s.rate_per_s for s in steps] == [NORMAL * f for f in shapes.STEP_FACTORS]
    assert {s.duration_s for s in steps} == {b.load.step_s}
    assert shape.judged_by_step
    assert len([s for s in build("step", b, NORMAL, 3 * b.load.step_s).stages if s.label != "ramp-up"]) == 3


def test_tick_gives_users_for_the_rate_ahead_then_stops_after_the_drain(b):
    shape = build("spike", b, NORMAL, 120)
    start = next(w for w in shape.windows() if w[2].label == "spike")[0]
    users_before, _ = tick(shape, start - 10)
    users_just_before, spawn = tick(shape, start - 2)  # the users are there before the step
    assert users_before == math.ceil(NORMAL * shapes.USER_SECONDS)
    assert users_just_before == math.ceil(NORMAL * b.traffic.peak_multiplier * shapes.USER_SECONDS)
    assert spawn > 0
    assert tick(shape, shape.duration_s + 1) is not None  # draining
    assert tick(shape, shape.duration_s + shapes.DRAIN_S) is None
    assert tick(shape, 5, stop=True) is None
    assert tick(shape, start, max_users=7) == (7, 10.0)


def test_unknown_shapes_and_bad_durations_are_refused_with_the_valid_values(b):
    with pytest.raises(ShapeError, match="the shapes: normal, peak, weekend, holiday, daily, spike, step, soak"):
        build("burst", b, NORMAL)
    for text in ("", "abc", "5x", "0", "-3"):
        with pytest.raises(ShapeError, match="duration"):
            parse_duration(text)
    assert [parse_duration(t) for t in ("90", "90s", "5m", "1h30m", "2m30s")] == [90, 90, 300, 5400, 150]


def test_the_normal_rate_is_the_targets_or_the_default(b):
    rates = b.load.normal_rate_per_s
    assert b.load.normal_rate("local") == rates["local"]
    assert b.load.normal_rate("no-such-stack") == rates["default"]
    # the local peak stays inside what the local stack can serve (about 50 detections/s, ~70 % of the mix)
    assert 0.7 * rates["local"] * b.traffic.peak_multiplier < 50
