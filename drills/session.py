"""A drill's measurement session: what users felt while the fault was on, recorded from the outside.

Chaos Toolkit experiments call these functions as ``python`` providers (module ``drills.session``):
``start`` before the fault, ``mark`` at each phase, ``finish`` once recovery has been awaited. Between
them a bounded background load through the load balancer records every request (time, status, latency),
an optional writer records every acknowledged database write, a watcher notes when each alarm of the
catalogue fires on the target (Prometheus's alerts, or a stack's CloudWatch alarms), and an abort guard stops
the experiment (Chaos Toolkit then plays the rollbacks) when the critical error rate has held for
``recovery.abort_after_s`` or, on AWS, a critical alarm users feel goes to ALARM.

One session per process, and one drill per target: ``start`` takes the target's lock (drills/targets.py: a
file lock on the local stack's state directory, an SSM parameter on AWS), held until ``finish``.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from drills import targets
from drills.targets import DrillError
from local.recorders import RequestRecorder, WriteRecorder, error_rate_percent, write_jsonl
from pynomaly_ops.alarms import STOP_ON
from pynomaly_ops.baselines import load
from pynomaly_ops.outputs import StackOutputs

RUN_DIR_ENV = "PYNOMALY_DRILL_RUN_DIR"
DEFAULT_RUNS = Path("reports") / "drills"
# A small fixed series: the request every user makes (detection), answered from the cache once warm.
PROBE_SERIES = [1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.02, 0.98, 1.01, 9.0]
WATCH_INTERVAL_S = 1.0
GUARD_WINDOW_S = 5.0  # the error rate the guard watches is over this trailing window


def run_dir(drill: str) -> Path:
    """Where this drill's files go: ``$PYNOMALY_DRILL_RUN_DIR`` (set by the runner) or reports/drills/."""
    chosen = os.environ.get(RUN_DIR_ENV)
    path = Path(chosen) if chosen else DEFAULT_RUNS / f"{time.strftime('%Y%m%d-%H%M%S')}-{drill}"
    path.mkdir(parents=True, exist_ok=True)
    return path


class AlertWatcher(threading.Thread):
    """Polls the target's alarms; notes when each catalogue alarm was first pending and first firing. An alarm
    already active at the first poll was not caused by the fault and is left out until it clears: raised again,
    it counts."""

    def __init__(self) -> None:
        super().__init__(name="alert-watcher", daemon=True)
        self.seen: dict[str, dict[str, float]] = {}  # catalogue key -> {"pending": at, "firing": at}
        self.active_at_start: set[str] = set()  # for the record
        self.already_active: set[str] | None = None  # active since the first poll: not caused by the fault
        self.firing: set[str] = set()  # firing at the last poll
        self.errors = 0  # polls that failed: the report says so (the guard's alarm stop was blind meanwhile)
        self.stop_event = threading.Event()

    def interval_s(self) -> float:
        return WATCH_INTERVAL_S

    def poll(self) -> set[tuple[str, str, float]]:
        """The active alarms now: ``(key, state, since)``."""
        raise NotImplementedError

    def run(self) -> None:
        while not self.stop_event.wait(self.interval_s()):
            try:
                active = self.poll()
            except Exception:  # a poll that fails (the API throttled, a timeout) is retried at the next
                self.errors += 1
                continue
            self.firing = {key for key, state, _ in active if state == "firing"}
            if self.already_active is None:
                self.active_at_start = {key for key, _, _ in active}
                self.already_active = set(self.active_at_start)
                continue
            self.already_active &= {key for key, _, _ in active}  # one that cleared is the fault's if raised again
            for key, state, at in active:
                if key not in self.already_active:
                    self.seen.setdefault(key, {}).setdefault(state, at)


class PrometheusWatcher(AlertWatcher):
    """The local stack's alarms: Prometheus's alerts (pending, then firing after their ``for``)."""

    def __init__(self, prometheus_url: str, names_to_keys: dict[str, str]) -> None:
        super().__init__()
        self.url = f"{prometheus_url}/api/v1/alerts"
        self.names_to_keys = names_to_keys

    def poll(self) -> set[tuple[str, str, float]]:
        alerts = httpx.get(self.url, timeout=2).json()["data"]["alerts"]
        now = time.time()
        return {(k, a["state"], now) for a in alerts if (k := self.names_to_keys.get(a["labels"].get("alertname", "")))}


class CloudWatchWatcher(AlertWatcher):
    """A stack's CloudWatch alarms: in ALARM is firing (CloudWatch has no pending state), since the alarm's own
    state change, not the poll that saw it."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__()
        self.keys = keys

    def interval_s(self) -> float:
        from aws_target.target import POLL_INTERVAL_S  # every call counts against the account's API rate

        return POLL_INTERVAL_S

    def poll(self) -> set[tuple[str, str, float]]:
        from aws_target.probes import alarms_in_alarm

        return {(key, "firing", at) for key, at in alarms_in_alarm(self.keys).items()}


def watcher_for(outputs: StackOutputs) -> AlertWatcher | None:
    """The target's alarms: CloudWatch's on AWS, Prometheus's on the local stack (None: a target without)."""
    if targets.current() == targets.AWS:
        keys = targets.cloudwatch_keys(outputs)
        return CloudWatchWatcher(keys) if keys else None
    if not outputs.prometheus_url:
        return None
    names = {names[t]: key for key, names in outputs.alarms.items() for t in names}
    return PrometheusWatcher(outputs.prometheus_url, names)


class AbortGuard(threading.Thread):
    """Stops the experiment once the critical error rate has held for ``hold_s``, or, on AWS, once one of the
    critical alarms users feel (STOP_ON, the FIS templates' stop conditions) goes to ALARM after the start
    (Chaos Toolkit's graceful exit: the method ends and the rollbacks play). ``reason`` says which."""

    def __init__(
        self,
        recorder: RequestRecorder,
        critical_percent: float,
        hold_s: float,
        watcher: AlertWatcher | None = None,
        stop_on: tuple[str, ...] = (),
    ) -> None:
        super().__init__(name="abort-guard", daemon=True)
        self.recorder, self.critical, self.hold_s = recorder, critical_percent, hold_s
        self.watcher, self.stop_on = watcher, stop_on
        self.tripped_at: float | None = None
        self.reason: str | None = None
        self.stop_event = threading.Event()

    def _alarm(self) -> str | None:
        w = self.watcher
        if w is None or w.already_active is None:
            return None
        return next((k for k in self.stop_on if k in w.firing and k not in w.already_active), None)

    def run(self) -> None:
        above_since: float | None = None
        while not self.stop_event.wait(1.0):
            now = time.monotonic()
            if alarm := self._alarm():
                self._trip(f"the critical alarm {alarm} went to ALARM")
                return
            recent = [r for r in self.recorder.records if now - GUARD_WINDOW_S <= r.t]
            if recent and error_rate_percent(recent) >= self.critical:
                above_since = above_since or now
                if now - above_since >= self.hold_s:
                    self._trip(f"the critical error rate held for {self.hold_s:g} s")
                    return
            else:
                above_since = None

    def _trip(self, reason: str) -> None:
        self.tripped_at, self.reason = time.time(), reason
        self._abort()

    @staticmethod
    def _abort() -> None:
        from chaoslib.exit import exit_gracefully  # SIGUSR1 to this process: Chaos Toolkit's own stop

        exit_gracefully()


@dataclass
class Session:
    drill: str
    directory: Path
    outputs: StackOutputs
    lock: targets.FileLock | targets.StackLock
    requests: RequestRecorder
    watcher: AlertWatcher | None
    guard: AbortGuard
    writes: WriteRecorder | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    extra_load: list[RequestRecorder] = field(default_factory=list)


_SESSION: Session | None = None


def current() -> Session:
    if _SESSION is None:
        raise DrillError("no drill measurement is running: the experiment must call drills.session.start first")
    return _SESSION


def _probe_recorder(outputs: StackOutputs, rate_per_s: float, duration_s: float) -> RequestRecorder:
    return RequestRecorder(
        f"{outputs.load_balancer_url}/api/v1/detect",
        rate_per_s=rate_per_s,
        method="POST",
        headers={"Authorization": f"Bearer {outputs.api_key}"},
        json_body={"series": PROBE_SERIES},
        max_duration_s=duration_s,
    )


def start(
    drill: str,
    writes: bool = False,
    guard: bool = True,
    max_duration_s: float = 600,
    state_dir: str | None = None,
) -> dict[str, Any]:
    """Lock the target, then start the background load (and the writer, the alert watcher, the guard).

    ``guard`` off is for a planned full outage (maintenance mode), where every request failing is the
    expected answer, not a reason to abort."""
    global _SESSION
    if _SESSION is not None:
        raise DrillError(f"a measurement for {_SESSION.drill} is already running in this process")
    b = load()
    lock = targets.lock(state_dir)
    lock.acquire(drill)
    started: list[RequestRecorder | WriteRecorder | threading.Thread] = []  # stopped again if start fails
    try:
        outputs = targets.outputs(state_dir)
        requests = _probe_recorder(outputs, b.recovery.drill_load_per_s, max_duration_s)
        watcher = watcher_for(outputs)
        stop_on = STOP_ON if targets.current() == targets.AWS else ()
        abort_guard = AbortGuard(
            requests, b.thresholds.error_rate_percent.critical, b.recovery.abort_after_s, watcher, stop_on
        )
        session = Session(drill, run_dir(drill), outputs, lock, requests, watcher, abort_guard)
        if writes:
            if not outputs.db_writer_dsn:
                raise DrillError("this target has no db_writer_dsn output to record writes through")
            session.writes = WriteRecorder(outputs.db_writer_dsn, max_duration_s=max_duration_s).start()
            started.append(session.writes)
        started.append(requests.start())
        for thread in (watcher, abort_guard if guard else None):
            if thread is not None:
                thread.start()
                started.append(thread)
        requests.wait_for_ok(10, timeout_s=30)
        if session.writes is not None:
            session.writes.wait_for_acknowledged(50, timeout_s=30)
    except BaseException:
        _stop_all(started)
        lock.release()
        raise
    _SESSION = session
    mark("measurement started")
    return {"drill": drill, "run_dir": str(session.directory), "rate_per_s": requests.rate_per_s}


def _stop_all(started: list[RequestRecorder | WriteRecorder | threading.Thread]) -> None:
    for part in started:
        with contextlib.suppress(Exception):
            if isinstance(part, AlertWatcher | AbortGuard):
                part.stop_event.set()
            elif not isinstance(part, threading.Thread):
                part.stop()


def mark(event: str, detail: Any = None, at: float | None = None) -> dict[str, Any]:
    """Note a phase of the drill on the timeline (fault injected, recovered...) with the wall-clock time, now or
    ``at`` (a fault that returns once it has acted says when it began)."""
    entry = {"event": event, "at": time.time() if at is None else at, "detail": detail}
    current().events.append(entry)
    return entry


def add_load(multiplier: float, duration_s: float = 300) -> dict[str, Any]:
    """More of the same load on top: ``multiplier`` times the drill's rate in total (the traffic spike)."""
    session = current()
    extra_rate = session.requests.rate_per_s * (multiplier - 1)
    recorder = _probe_recorder(session.outputs, extra_rate, duration_s).start()
    session.extra_load.append(recorder)
    return mark("load raised", {"multiplier": multiplier, "extra_rate_per_s": extra_rate})


def remove_load() -> dict[str, Any]:
    session = current()
    if not session.extra_load:
        return {"extra_requests": 0}
    for recorder in session.extra_load:
        recorder.stop()
    detail = {"extra_requests": sum(len(r.records) for r in session.extra_load)}
    session.extra_load.clear()
    return mark("load back to normal", detail)


def finish(observe_s: float = 10, lost_writes_check: bool = True) -> dict[str, Any]:
    """Keep measuring ``observe_s`` after recovery (what users see once it is over: part of the record, not
    a wait for recovery), then stop everything, write the records and release the lock."""
    global _SESSION
    session = current()
    try:
        with contextlib.suppress(Exception):
            remove_load()
        time.sleep(observe_s)
        mark("measurement stopped")
        session.guard.stop_event.set()
        if session.watcher is not None:
            session.watcher.stop_event.set()
        session.requests.stop()
        d = session.directory
        extra = [r for recorder in session.extra_load for r in recorder.records]
        write_jsonl(d / "requests.jsonl", (r.as_dict() for r in session.requests.records))
        write_jsonl(d / "extra-requests.jsonl", (r.as_dict() for r in extra))
        data: dict[str, Any] = {
            "drill": session.drill,
            "events": session.events,
            "alarms": session.watcher.seen if session.watcher else {},
            "alarms_active_before": sorted(session.watcher.active_at_start) if session.watcher else [],
            "alarm_polls_failed": session.watcher.errors if session.watcher else 0,
            "aborted_at": session.guard.tripped_at,
            "aborted_because": session.guard.reason,
            "target": targets.describe(),
        }
        if session.writes is not None:
            session.writes.stop()
            lost = session.writes.lost_writes() if lost_writes_check else []
            write_jsonl(d / "writes.jsonl", (a.as_dict() for a in session.writes.attempts))
            data["writes"] = session.writes.summary(lost)
            session.writes.drop_table()
        (d / "session.json").write_text(json.dumps(data, indent=2) + "\n")
        return {"run_dir": str(d), "requests": len(session.requests.records)}
    finally:
        session.lock.release()
        _SESSION = None


def abort_if_running() -> dict[str, Any]:
    """A rollback: stops what the method left running (a session after a failed action, keeping its records;
    via FIS, the stack's experiments still acting)."""
    stopped = {"fis_experiments_stopped": experiments} if (experiments := targets.stop_injected()) else {}
    if _SESSION is None:
        return {"stopped": False, **stopped}
    return {"stopped": True, **stopped, **finish(observe_s=0, lost_writes_check=False)}
