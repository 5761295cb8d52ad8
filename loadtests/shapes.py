"""Traffic shapes: the offered request rate over time, computed from ``baselines.yaml``, never typed in.

A shape is a list of stages of constant rate (a ramp is a run of one-second stages). It answers three
questions: the offered rate at a time (:meth:`Shape.rate_at`), when each request is due (:meth:`Shape.due`,
the open model: arrival ``i`` is due when the integral of the rate reaches ``i``, whatever happened to the
others), and how many Locust users it needs so that a pool of busy users never holds the schedule back
(:meth:`Shape.users_at`). The Locust ``LoadTestShape`` in the locustfile only reads these.

Pure: no Locust, no network; the unit tests call it directly.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from pynomaly_ops.baselines import Baselines

# Each user can keep a request this long in flight before the schedule needs one more user; with the
# request timeout below, a run whose target answers slower than this drops arrivals and is marked invalid.
USER_SECONDS = 3.0
MIN_USERS = 4
MAX_USERS = 2000
REQUEST_TIMEOUT_S = 10.0
# A request is dropped (not sent, counted against the achieved rate) when no user was free this long
# after it was due: k6's dropped iterations. Sending it later would burst to catch up.
LATE_TOLERANCE_S = 1.0
STEP_FACTORS = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0)
DAY_S = 24 * 3600


@dataclass(frozen=True)
class Stage:
    duration_s: float
    rate_per_s: float
    label: str = ""


@dataclass(frozen=True)
class Shape:
    """The offered rate over a run. ``ramp_up_s`` is excluded from the verdict; ``steps`` (``step`` only)
    are judged one by one to find the capacity knee."""

    name: str
    description: str
    normal_rate_per_s: float
    stages: tuple[Stage, ...]
    ramp_up_s: float = 0.0
    judged_by_step: bool = False
    default_fail_on: str = "warning"
    _starts: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _counts: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _total: int = field(init=False, repr=False, compare=False)  # asked for at every request: computed once

    def __post_init__(self) -> None:
        starts, counts, t, n = [], [], 0.0, 0.0
        for s in self.stages:
            starts.append(t)
            counts.append(n)
            t += s.duration_s
            n += s.duration_s * s.rate_per_s
        object.__setattr__(self, "_starts", (*starts, t))
        object.__setattr__(self, "_counts", (*counts, n))
        object.__setattr__(self, "_total", math.ceil(n - 1e-9))

    @property
    def duration_s(self) -> float:
        return self._starts[-1]

    @property
    def total_requests(self) -> int:
        return self._total

    def _stage_index(self, t: float) -> int | None:
        if t < 0 or t >= self.duration_s:
            return None
        return bisect.bisect_right(self._starts, t) - 1

    def rate_at(self, t: float) -> float:
        """Offered requests/s at ``t`` seconds into the run (0 outside it)."""
        i = self._stage_index(t)
        return 0.0 if i is None else self.stages[i].rate_per_s

    def stage_at(self, t: float) -> Stage | None:
        i = self._stage_index(t)
        return None if i is None else self.stages[i]

    def offered_by(self, t: float) -> float:
        """Requests due in ``[0, t)``: the integral of the rate."""
        if t <= 0:
            return 0.0
        if t >= self.duration_s:
            return self._counts[-1]
        i = bisect.bisect_right(self._starts, t) - 1
        return self._counts[i] + (t - self._starts[i]) * self.stages[i].rate_per_s

    def due(self, i: int) -> float | None:
        """Seconds into the run at which request ``i`` (0-based) is due; None past the end."""
        if i < 0 or i >= self.total_requests:
            return None
        k = bisect.bisect_right(self._counts, i) - 1
        while k < len(self.stages) and self.stages[k].rate_per_s == 0:
            k += 1
        if k >= len(self.stages):
            return None
        return self._starts[k] + (i - self._counts[k]) / self.stages[k].rate_per_s

    def first_due_from(self, t: float) -> int:
        """The index of the first request due at or after ``t`` seconds (``total_requests`` if none)."""
        return min(self.total_requests, max(0, math.ceil(self.offered_by(t) - 1e-9)))

    def due_per_second(self, first: int, stop: int, step: int = 1) -> dict[int, int]:
        """How many of the requests ``first, first + step, ...`` below ``stop`` fall due in each whole
        second: a generator behind by thousands of requests drops them a second at a time, not one by one."""
        out: dict[int, int] = {}
        i = first
        while i < stop:
            due = self.due(i)
            if due is None:
                break
            second = int(due)
            n = max(1, -(-(min(stop, self.first_due_from(second + 1)) - i) // step))
            out[second] = out.get(second, 0) + n
            i += n * step
        return out

    def peak_rate_per_s(self) -> float:
        return max((s.rate_per_s for s in self.stages), default=0.0)

    def users_at(self, t: float) -> int:
        """Users needed at ``t``: enough for the highest rate of the next few seconds, so users are
        spawned before a step, and at least :data:`MIN_USERS`."""
        ahead = max(self.rate_at(t + dt) for dt in (0.0, 1.0, 2.0, 3.0))
        return max(MIN_USERS, min(MAX_USERS, math.ceil(ahead * USER_SECONDS)))

    def windows(self) -> list[tuple[float, float, Stage]]:
        """``(start_s, end_s, stage)`` of every stage."""
        return [(self._starts[i], self._starts[i + 1], s) for i, s in enumerate(self.stages)]


class ShapeError(ValueError):
    """An unknown shape, or a duration that does not fit it."""


# --- durations -------------------------------------------------------------------------------------------
_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*$")


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``5m``, ``1h30m``, ``2m30s`` -> seconds (above 0)."""
    match = _DURATION.match(text or "")
    if not match or not any(match.groups()):
        raise ShapeError(f"duration {text!r} does not parse: use seconds or h/m/s, e.g. 90, 90s, 5m, 1h30m")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = 3600 * hours + 60 * minutes + seconds
    if total <= 0:
        raise ShapeError(f"duration {text!r} must be above 0")
    return total


# --- the shapes ------------------------------------------------------------------------------------------
def _ramp(rate: float, seconds: float) -> list[Stage]:
    """A linear ramp from 0 to ``rate`` in one-second stages (the rate of each second is its midpoint's)."""
    whole = math.ceil(seconds)
    return [Stage(min(1.0, seconds - i), rate * (i + 0.5) / seconds, "ramp-up") for i in range(whole)]


def _steady(b: Baselines, name: str, rate: float, normal: float, duration: float, what: str, fail_on: str) -> Shape:
    ramp = min(b.load.ramp_up_s, duration / 4)
    stages = (*_ramp(rate, ramp), Stage(duration - ramp, rate, name))
    return Shape(name, what, normal, stages, ramp_up_s=ramp, default_fail_on=fail_on)


def _daily(b: Baselines, normal: float, duration: float) -> Shape:
    """A business day in ``duration``: each hour of the traffic timezone's day lasts duration/24; peak
    hours (traffic.peak_hours, e.g. 09:00-17:00 America/New_York) at the peak multiple, the rest normal."""
    peak = b.traffic.peak_hours
    zone = ZoneInfo(peak.timezone)
    start_h, end_h = (int(x[:2]) * 60 + int(x[3:]) for x in (peak.start, peak.end))
    ramp = min(b.load.ramp_up_s, duration / 8)
    hour_s = (duration - ramp) / 24
    midnight = datetime(2026, 1, 7, tzinfo=zone)  # a Wednesday: a business day
    stages: list[Stage] = []
    for minute in range(0, 24 * 60, 30):  # half-hour resolution fits HH:MM peak bounds on the half hour
        local = midnight + timedelta(minutes=minute)
        minutes = local.hour * 60 + local.minute
        in_peak = start_h <= minutes < end_h
        rate = normal * (b.traffic.peak_multiplier if in_peak else 1.0)
        stages.append(Stage(hour_s / 2, rate, f"{local:%H:%M} {'peak' if in_peak else 'off-peak'}"))
    return Shape(
        "daily",
        f"a business day compressed into {duration:g}s: peak {peak.start}-{peak.end} {peak.timezone} "
        f"at {b.traffic.peak_multiplier:g}x",
        normal,
        (*_ramp(normal, ramp), *stages),
        ramp_up_s=ramp,
    )


def _spike(b: Baselines, normal: float, duration: float) -> Shape:
    """Normal, a sudden jump to the peak multiple (no ramp) for half the run, back to normal."""
    ramp = min(b.load.ramp_up_s, duration / 8)
    calm = (duration - ramp) / 4
    peak = normal * b.traffic.peak_multiplier
    stages = (
        *_ramp(normal, ramp),
        Stage(calm, normal, "before the spike"),
        Stage(2 * calm, peak, "spike"),
        Stage(calm, normal, "after the spike"),
    )
    return Shape("spike", f"sudden {b.traffic.peak_multiplier:g}x for half the run", normal, stages, ramp_up_s=ramp)


def _step(b: Baselines, normal: float, duration: float | None) -> Shape:
    """Rising steps of ``load.step_s`` from normal up to STEP_FACTORS' last multiple (or ``duration``); the
    run stops at the first step that breaks a warning threshold and the knee is the last step that held."""
    step = b.load.step_s
    count = len(STEP_FACTORS) if duration is None else max(1, min(len(STEP_FACTORS), int(duration // step)))
    ramp = min(b.load.ramp_up_s, step / 2)
    stages = (
        *_ramp(normal, ramp),
        *(Stage(step, normal * f, f"step {i + 1}: {f:g}x normal") for i, f in enumerate(STEP_FACTORS[:count])),
    )
    return Shape(
        "step",
        f"rising steps of {step:g}s ({', '.join(f'{f:g}x' for f in STEP_FACTORS[:count])} normal) until a "
        "warning threshold breaks: the capacity knee",
        normal,
        stages,
        ramp_up_s=ramp,
        judged_by_step=True,
    )


DEFAULT_DURATIONS_S = {
    "normal": 60.0,
    "peak": 60.0,
    "weekend": 60.0,
    "holiday": 60.0,
    "daily": 240.0,
    "spike": 120.0,
    "soak": 1800.0,
}
SHAPES = ("normal", "peak", "weekend", "holiday", "daily", "spike", "step", "soak")


def build(name: str, b: Baselines, normal_rate_per_s: float, duration_s: float | None = None) -> Shape:
    """The shape ``name`` around ``normal_rate_per_s`` (from ``load.normal_rate_per_s`` of the target)."""
    if name not in SHAPES:
        raise ShapeError(f"unknown shape {name!r}; the shapes: {', '.join(SHAPES)}")
    if duration_s is not None and duration_s <= 0:
        raise ShapeError("the duration must be above 0")
    if name == "step":
        return _step(b, normal_rate_per_s, duration_s)
    duration = duration_s or DEFAULT_DURATIONS_S[name]
    t = b.traffic
    if name == "daily":
        return _daily(b, normal_rate_per_s, duration)
    if name == "spike":
        return _spike(b, normal_rate_per_s, duration)
    levels = {
        "normal": (1.0, "the normal rate (000 Performance Baselines)", "normal"),
        "peak": (t.peak_multiplier, f"peak hours: {t.peak_multiplier:g}x normal", "warning"),
        "weekend": (t.weekend_fraction, f"weekend: {100 * t.weekend_fraction:g} % of normal", "normal"),
        "holiday": (t.holiday_fraction, f"holiday: {100 * t.holiday_fraction:g} % of normal", "normal"),
        "soak": (1.0, "normal for a long time: memory and latency drift", "normal"),
    }
    factor, what, fail_on = levels[name]
    return _steady(b, name, normal_rate_per_s * factor, normal_rate_per_s, duration, what, fail_on)


# --- what the Locust LoadTestShape returns ---------------------------------------------------------------
DRAIN_S = 5.0  # after the last arrival: in-flight requests finish and the workers' last reports arrive
SPAWN_PER_WORKER_S = 100.0  # Locust warns above 100 users/s per worker


def tick(
    shape: Shape, t: float, workers: int = 1, max_users: int = MAX_USERS, stop: bool = False
) -> tuple[int, float] | None:
    """``(users, spawn_rate)`` at ``t`` seconds into the run, or None to stop: the shape's end plus
    :data:`DRAIN_S`, or ``stop`` (the abort guard, or the step that broke)."""
    if stop or t >= shape.duration_s + DRAIN_S:
        return None
    users = min(max_users, shape.users_at(min(t, max(0.0, shape.duration_s - 1e-6))))
    return users, float(min(max(10, users), SPAWN_PER_WORKER_S * max(1, workers)))
