"""What a run measured, second by second and endpoint by endpoint, finely enough to judge exactly.

Response times go into histograms of 1 ms buckets up to :data:`FINE_LIMIT_MS` (then 100 ms), so a p95 near
500 or 1000 ms is known to the millisecond: a threshold in whole milliseconds is judged exactly (Locust's
own statistics round to 10 ms above 100 ms and 100 ms above 1000 ms). Each worker process records into a
:class:`Recording` and sends its deltas to the master with Locust's reports, where they are merged; the
master writes the whole recording as JSON, from which the verdict, the plot and the comparison are made.

Pure: no Locust.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FINE_LIMIT_MS = 5000
COARSE_MS = 100
ALL = "all"  # the name of the aggregate over every endpoint


def bucket(ms: float) -> int:
    """The lower edge (ms) of the bucket holding ``ms``."""
    if ms < FINE_LIMIT_MS:
        return max(0, int(ms))
    return FINE_LIMIT_MS + COARSE_MS * int((ms - FINE_LIMIT_MS) // COARSE_MS)


def width(edge: int) -> int:
    return 1 if edge < FINE_LIMIT_MS else COARSE_MS


@dataclass
class Stats:
    """Requests of one endpoint (or all) over some seconds: counts, failures, the 4xx that were expected
    (bad requests answered as they must be), the exact sum of response times and their histogram."""

    requests: int = 0
    failures: int = 0
    expected_4xx: int = 0
    sum_ms: float = 0.0
    hist: dict[int, int] = field(default_factory=dict)

    def add(self, ms: float, failed: bool, expected: bool = False) -> None:
        self.requests += 1
        self.failures += failed
        self.expected_4xx += expected
        self.sum_ms += ms
        edge = bucket(ms)
        self.hist[edge] = self.hist.get(edge, 0) + 1

    def merge(self, other: Stats) -> None:
        self.requests += other.requests
        self.failures += other.failures
        self.expected_4xx += other.expected_4xx
        self.sum_ms += other.sum_ms
        for edge, count in other.hist.items():
            self.hist[edge] = self.hist.get(edge, 0) + count

    @property
    def avg_ms(self) -> float | None:
        return self.sum_ms / self.requests if self.requests else None

    @property
    def error_percent(self) -> float:
        return 100 * self.failures / self.requests if self.requests else 0.0

    def percentile_range(self, q: float) -> tuple[int, int] | None:
        """Nearest-rank ``q``-quantile (0 < q <= 1) as its bucket ``[low, high)`` in ms; None when empty."""
        if not self.requests:
            return None
        rank = max(1, math.ceil(q * self.requests))
        seen = 0
        for edge in sorted(self.hist):
            seen += self.hist[edge]
            if seen >= rank:
                return edge, edge + width(edge)
        raise AssertionError("histogram counts do not add up to the request count")

    def percentile_ms(self, q: float) -> float | None:
        """The quantile's bucket lower edge: the true value is in ``[it, it + 1 ms)`` below 5 s."""
        found = self.percentile_range(q)
        return None if found is None else float(found[0])

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.requests,
            "f": self.failures,
            "x": self.expected_4xx,
            "s": self.sum_ms,
            "h": {str(k): v for k, v in self.hist.items()},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Stats:
        return cls(d["n"], d["f"], d["x"], d["s"], {int(k): v for k, v in d["h"].items()})


@dataclass
class Pace:
    """The open model's bookkeeping for one second: requests due, sent, and dropped (no user was free
    within the late tolerance), and the worst lateness of a sent request."""

    offered: int = 0
    sent: int = 0
    dropped: int = 0
    max_late_ms: float = 0.0

    def merge(self, other: Pace) -> None:
        self.offered += other.offered
        self.sent += other.sent
        self.dropped += other.dropped
        self.max_late_ms = max(self.max_late_ms, other.max_late_ms)

    def to_json(self) -> list[float]:
        return [self.offered, self.sent, self.dropped, self.max_late_ms]

    @classmethod
    def from_json(cls, d: list[float]) -> Pace:
        return cls(int(d[0]), int(d[1]), int(d[2]), float(d[3]))


class Recording:
    """Per second since the run's start (``t0``, wall clock): per endpoint :class:`Stats` and the
    :class:`Pace`. ``take_delta`` empties it (a worker's report); ``merge_delta`` adds one (the master)."""

    def __init__(self, t0: float | None = None) -> None:
        self.t0 = t0
        self.stats: dict[int, dict[str, Stats]] = defaultdict(dict)
        self.pace: dict[int, Pace] = defaultdict(Pace)
        self.meta: dict[str, Any] = {}

    def second(self, wall: float) -> int:
        return int(wall - (self.t0 or wall))

    def record(self, name: str, wall_start: float, ms: float, failed: bool, expected: bool = False) -> None:
        per = self.stats[self.second(wall_start)]
        if name not in per:
            per[name] = Stats()
        per[name].add(ms, failed, expected)

    def offered(self, due_s: float, sent: bool, late_ms: float = 0.0) -> None:
        p = self.pace[int(due_s)]
        p.offered += 1
        if sent:
            p.sent += 1
            p.max_late_ms = max(p.max_late_ms, late_ms)
        else:
            p.dropped += 1

    def dropped(self, due_second: int, n: int) -> None:
        """``n`` requests due in that second that were never sent."""
        p = self.pace[due_second]
        p.offered += n
        p.dropped += n

    # --- between processes -----------------------------------------------------------------------------
    def take_delta(self) -> dict[str, Any]:
        delta = {
            "stats": {str(s): {n: st.to_json() for n, st in per.items()} for s, per in self.stats.items()},
            "pace": {str(s): p.to_json() for s, p in self.pace.items()},
        }
        self.stats.clear()
        self.pace.clear()
        return delta

    def merge_delta(self, delta: dict[str, Any]) -> None:
        for s, per in delta.get("stats", {}).items():
            target = self.stats[int(s)]
            for name, d in per.items():
                target.setdefault(name, Stats()).merge(Stats.from_json(d))
        for s, d in delta.get("pace", {}).items():
            self.pace[int(s)].merge(Pace.from_json(d))

    # --- queries -----------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted({n for per in self.stats.values() for n in per})

    def window(self, start_s: float = 0, end_s: float = math.inf, name: str = ALL) -> Stats:
        """Requests started in seconds ``[start_s, end_s)``, of one endpoint or all."""
        out = Stats()
        for s, per in self.stats.items():
            if start_s <= s < end_s:
                for n, st in per.items():
                    if name in (ALL, n):
                        out.merge(st)
        return out

    def pace_window(self, start_s: float = 0, end_s: float = math.inf) -> Pace:
        out = Pace()
        for s, p in self.pace.items():
            if start_s <= s < end_s:
                out.merge(p)
        return out

    def last_second(self) -> int:
        return max([*self.stats, *self.pace], default=-1)

    def series(self, width_s: int = 1) -> list[dict[str, Any]]:
        """Windows of ``width_s`` seconds: offered and achieved rate, p50/p95/p99 (ms), errors (%)."""
        rows = []
        for start in range(0, self.last_second() + 1, width_s):
            st, p = self.window(start, start + width_s), self.pace_window(start, start + width_s)
            rows.append(
                {
                    "t": start,
                    "offered_per_s": p.offered / width_s,
                    "achieved_per_s": p.sent / width_s,
                    "requests": st.requests,
                    "p50_ms": st.percentile_ms(0.50),
                    "p95_ms": st.percentile_ms(0.95),
                    "p99_ms": st.percentile_ms(0.99),
                    "error_percent": st.error_percent,
                }
            )
        return rows

    # --- files --------------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        delta = {
            "stats": {str(s): {n: st.to_json() for n, st in per.items()} for s, per in sorted(self.stats.items())},
            "pace": {str(s): p.to_json() for s, p in sorted(self.pace.items())},
        }
        return {"t0": self.t0, "meta": self.meta, **delta}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Recording:
        r = cls(d.get("t0"))
        r.meta = d.get("meta", {})
        r.merge_delta(d)
        return r

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json()) + "\n")

    @classmethod
    def read(cls, path: Path) -> Recording:
        return cls.from_json(json.loads(path.read_text()))


def merged(stats: Iterable[Stats]) -> Stats:
    out = Stats()
    for s in stats:
        out.merge(s)
    return out
