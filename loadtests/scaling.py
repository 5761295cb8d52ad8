"""``--watch-scaling``: while the load rises, poll the target's capacity and CPU, then tell when each of these
happened (seconds into the run): the load step, CPU over the scaling target, the capacity change, the new
capacity serving, and p95 back under the warning level.

Local stack: the capacity is the instance count in the load balancer (``local scale`` and the traffic-spike
drill change it; the local stack has no autoscaler of its own), serving = those instances UP; CPU is this
host's (``/proc/stat``: the stack runs here). Other targets: the capacity readers of AWS (ASG desired /
in-service) and EKS (the HPA's current / desired replicas) are not built yet; the timeline then has the
load steps and the latency only, and says so.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from loadtests.recording import Recording
from loadtests.shapes import Shape
from loadtests.targets import Target, instance_count
from pynomaly_ops.baselines import load

POLL_S = 1.0
P95_WINDOW_S = 5


def _cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole host."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


class Watcher:
    """Samples ``(wall time, capacity, serving, cpu %)`` every second in a thread."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scaling-watch", daemon=True)
        self.error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _capacity(self) -> tuple[int | None, int | None]:
        if self.target.kind != "local":
            return None, None
        from local.probes import instance_count as count

        return count(self.target.state_dir), instance_count(self.target)

    def _run(self) -> None:
        local = self.target.kind == "local"
        busy0, total0 = _cpu_times() if local else (0.0, 0.0)
        while not self._stop.wait(POLL_S):
            try:
                capacity, serving = self._capacity()
                cpu = None
                if local:
                    busy, total = _cpu_times()
                    cpu = 100 * (busy - busy0) / max(1.0, total - total0)
                    busy0, total0 = busy, total
                self.samples.append({"at": time.time(), "capacity": capacity, "serving": serving, "cpu_percent": cpu})
            except Exception as exc:  # a probe failing once must not end the watch; the timeline says so
                self.error = f"{type(exc).__name__}: {exc}"

    def timeline(self, shape: Shape, recording_file: Path) -> dict[str, Any]:
        return timeline(shape, Recording.read(recording_file), self.samples, self.target.kind, self.error)


def _p95_back(rec: Recording, since_s: float, warning_ms: float) -> float | None:
    """The end of the first rolling window after ``since_s`` from which p95 stays under the warning level;
    None when it never went over (nothing to come back from) or never came back."""
    back, exceeded = None, False
    for s in range(int(since_s), rec.last_second() + 1):
        p95 = rec.window(s, s + P95_WINDOW_S).percentile_ms(0.95)
        if p95 is None:
            continue
        if p95 >= warning_ms:
            back, exceeded = None, True
        elif back is None:
            back = float(s + P95_WINDOW_S)
    return back if exceeded else None


def timeline(
    shape: Shape, rec: Recording, samples: list[dict[str, Any]], kind: str, error: str | None = None
) -> dict[str, Any]:
    """The events, each in seconds since the run's start (the recording's ``t0``)."""
    b = load()
    t0 = rec.t0 or (samples[0]["at"] if samples else 0.0)
    events: list[dict[str, Any]] = []
    previous = None
    for start, _end, stage in shape.windows():
        if previous is not None and stage.rate_per_s > previous * 1.2 and stage.label != "ramp-up":
            events.append({"t": start, "event": "load step", "detail": f"{previous:g} -> {stage.rate_per_s:g}/s"})
        previous = stage.rate_per_s
    cpu_over = False
    capacity = serving = None
    for s in samples:
        t = s["at"] - t0
        if s["cpu_percent"] is not None:
            over = s["cpu_percent"] > b.scaling.target_cpu_percent
            if over and not cpu_over:
                detail = f"{s['cpu_percent']:.0f} % > {b.scaling.target_cpu_percent:g} % (scaling.target_cpu_percent)"
                events.append({"t": t, "event": "CPU over the target", "detail": detail})
            cpu_over = over
        if s["capacity"] is not None and capacity is not None and s["capacity"] != capacity:
            events.append({"t": t, "event": "capacity change", "detail": f"{capacity} -> {s['capacity']} instances"})
        if (
            s["serving"] is not None
            and serving is not None
            and s["serving"] > serving
            and s["serving"] == s["capacity"]
        ):
            events.append({"t": t, "event": "new capacity serving", "detail": f"{s['serving']} instances UP"})
            back = _p95_back(rec, t, b.thresholds.response_time_p95_ms.warning)
            if back is not None:
                events.append(
                    {
                        "t": back,
                        "event": "p95 back under warning",
                        "detail": f"< {b.thresholds.response_time_p95_ms.warning:g} ms over {P95_WINDOW_S}s",
                    }
                )
        capacity = s["capacity"] if s["capacity"] is not None else capacity
        serving = s["serving"] if s["serving"] is not None else serving
    steps = [e["t"] for e in events if e["event"] == "load step"]
    if steps and not any(e["event"] == "new capacity serving" for e in events):
        back = _p95_back(rec, steps[0], b.thresholds.response_time_p95_ms.warning)
        if back is not None:
            events.append({"t": back, "event": "p95 back under warning", "detail": "no capacity change seen"})
    notes = []
    if kind != "local":
        notes.append("capacity not read for this target: the ASG and HPA readers are not built yet")
    if error:
        notes.append(f"a capacity probe failed: {error}")
    return {
        "events": sorted(events, key=lambda e: e["t"]),
        "samples": [{**s, "t": s["at"] - t0} for s in samples],
        "notes": notes,
    }
