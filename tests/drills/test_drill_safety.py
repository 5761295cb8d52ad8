"""The drills' safety nets without a stack: one drill per target (the lock), and the abort guard that stops
an experiment whose critical error rate holds."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from drills import session, targets
from drills.session import AbortGuard, DrillError
from drills.targets import FileLock as TargetLock
from local.recorders import RequestRecord

# --- the target lock ----------------------------------------------------------------------


def test_a_second_drill_on_the_same_target_is_refused_naming_the_holder(tmp_path):
    first, second = TargetLock(tmp_path), TargetLock(tmp_path)
    first.acquire("database-failover")
    try:
        with pytest.raises(DrillError) as refused:
            second.acquire("cache-flush")
        message = str(refused.value)
        assert f"database-failover pid {os.getpid()}" in message
        assert str(tmp_path / targets.LOCK_FILE) in message
    finally:
        first.release()
    second.acquire("cache-flush")  # released: the next drill may take it
    try:
        assert (tmp_path / targets.LOCK_FILE).read_text().startswith(f"cache-flush pid {os.getpid()} since ")
        with pytest.raises(DrillError, match="cache-flush"):
            TargetLock(tmp_path).acquire("instance-loss")
    finally:
        second.release()


def test_release_is_idempotent_and_locks_on_other_targets_are_independent(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    lock_a, lock_b = TargetLock(a), TargetLock(b)
    lock_a.acquire("instance-loss")
    lock_b.acquire("instance-loss")  # another target: no conflict
    lock_a.release()
    lock_a.release()
    lock_b.release()


def test_another_process_is_refused_while_the_lock_is_held(tmp_path):
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from drills.session import DrillError\nfrom drills.targets import FileLock as TargetLock\n"
        "try:\n"
        "    TargetLock(Path(sys.argv[1])).acquire('cache-flush')\n"
        "except DrillError as exc:\n"
        "    print(exc); sys.exit(3)\n"
    )
    lock = TargetLock(tmp_path)
    lock.acquire("traffic-spike")
    try:
        held = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    finally:
        lock.release()
    assert held.returncode == 3, held.stderr
    assert f"traffic-spike pid {os.getpid()}" in held.stdout
    free = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert free.returncode == 0, free.stdout + free.stderr


def test_start_refuses_a_locked_target_before_touching_it(tmp_path):
    holder = TargetLock(tmp_path)
    holder.acquire("instance-loss")
    try:
        with pytest.raises(DrillError, match="instance-loss pid"):
            session.start("cache-flush", state_dir=str(tmp_path))
    finally:
        holder.release()
    assert session._SESSION is None


def test_start_without_a_target_says_so_and_lets_the_lock_go(tmp_path):
    with pytest.raises(DrillError, match="no outputs"):
        session.start("cache-flush", state_dir=str(tmp_path))  # no outputs.json: no stack there
    assert session._SESSION is None
    lock = TargetLock(tmp_path)
    lock.acquire("cache-flush")  # not left held by the failed start
    lock.release()


def test_no_session_running():
    assert session._SESSION is None
    with pytest.raises(DrillError, match=r"drills\.session\.start"):
        session.mark("fault injected")
    assert session.abort_if_running() == {"stopped": False}


# --- the abort guard ----------------------------------------------------------------------
TICK_S = 0.05  # the guard's 1 s poll, scaled down
WINDOW_S = 0.25  # the guard's trailing window, scaled down alike


class FastEvent(threading.Event):
    def wait(self, timeout: float | None = None) -> bool:
        return super().wait(None if timeout is None else timeout * TICK_S)


class FakeRecorder:
    """Open-model load at 100/s seen live: every request scheduled so far, failing while ``failing(s)`` is
    true for its seconds since the recorder started."""

    def __init__(self, failing) -> None:
        self.started = time.monotonic()
        self.failing = failing

    @property
    def records(self) -> list[RequestRecord]:
        now, out = time.monotonic(), []
        for i in range(int((now - self.started) * 100)):
            s = i / 100
            t = self.started + s
            status, error = (None, "ConnectError") if self.failing(s) else (200, None)
            out.append(RequestRecord(t, time.time() - (now - t), status, error, 0.01))
        return out


@pytest.fixture
def fast_guard(monkeypatch):
    monkeypatch.setattr(session, "GUARD_WINDOW_S", WINDOW_S)
    guards: list[AbortGuard] = []

    def make(recorder: FakeRecorder, hold_s: float) -> tuple[AbortGuard, list[float]]:
        guard = AbortGuard(recorder, critical_percent=5.0, hold_s=hold_s)  # type: ignore[arg-type]
        guard.stop_event = FastEvent()
        calls: list[float] = []
        guard._abort = lambda: calls.append(time.monotonic())  # type: ignore[method-assign]
        guards.append(guard)
        return guard, calls

    yield make
    for guard in guards:
        guard.stop_event.set()
        guard.join(5)


def test_the_guard_trips_once_the_critical_error_rate_has_held(fast_guard):
    hold_s = 0.5
    recorder = FakeRecorder(failing=lambda s: True)
    guard, calls = fast_guard(recorder, hold_s)
    started, wall = time.monotonic(), time.time()
    guard.start()
    guard.join(5)
    assert not guard.is_alive(), "the guard did not trip within 5 s"
    assert len(calls) == 1  # the experiment stopped, once
    assert calls[0] - started >= hold_s  # not before the error rate has held for hold_s
    assert guard.tripped_at is not None and guard.tripped_at - wall >= hold_s


def test_the_guard_does_not_trip_when_errors_drop_before_the_hold_time(fast_guard):
    recorder = FakeRecorder(failing=lambda s: s < 0.3)  # a short burst of errors, then served again
    guard, calls = fast_guard(recorder, hold_s=1.0)
    guard.start()
    time.sleep(1.6)
    assert guard.is_alive() and calls == [] and guard.tripped_at is None
    guard.stop_event.set()
    guard.join(2)
    assert not guard.is_alive()
    assert calls == []


def test_errors_that_stop_restart_the_guards_clock(fast_guard):
    """Errors that stop and start again restart the clock: two bursts each shorter than the hold never trip."""
    recorder = FakeRecorder(failing=lambda s: s < 0.4 or 1.4 <= s < 1.8)
    guard, calls = fast_guard(recorder, hold_s=1.0)
    guard.start()
    time.sleep(2.6)
    assert calls == [] and guard.tripped_at is None


def test_the_guard_stops_the_experiment_through_chaos_toolkit(monkeypatch):
    """The real _abort: Chaos Toolkit's graceful exit (it signals the process; here only recorded)."""
    import chaoslib.exit

    called: list[bool] = []
    monkeypatch.setattr(chaoslib.exit, "exit_gracefully", lambda: called.append(True))
    AbortGuard._abort()
    assert called == [True]


# --- between drills: the last drill's alarms are its aftermath ---------------------------------


def test_every_drill_names_the_alarms_its_pre_check_requires_silent():
    from drills import catalog, runner

    for drill in catalog.DRILLS:
        assert {"error_rate.warning", "error_rate.critical"} <= set(runner.precheck_alarms(drill)), drill.name


def test_settle_sends_load_until_the_last_drills_alarms_clear(monkeypatch):
    from drills import catalog, runner, steps

    states = [{"error_rate.warning": "firing"}, {"error_rate.warning": "pending"}, {}]
    asked, samples, said = [], [], []

    def active(keys, state_dir=None):
        asked.append(keys)
        return states.pop(0)

    monkeypatch.setattr(steps, "active_alarms", active)
    monkeypatch.setattr(steps, "within_warning", lambda s, d=None: samples.append(s) or {"ok": True})
    drill = catalog.get("cache-flush")
    runner.settle(drill, said.append)
    assert asked == [runner.precheck_alarms(drill)] * 3 and states == []
    assert samples == [5, 5]  # the drills' load flows while it waits: a pending alarm is waited out too
    assert said[0] == "waiting for the last drill's alarms to clear: error_rate.warning (firing)"


def test_settle_gives_up_at_its_deadline_and_leaves_the_verdict_to_the_pre_check(monkeypatch):
    from drills import catalog, runner, steps

    monkeypatch.setattr(runner, "SETTLE_TIMEOUT_S", 0.05)
    monkeypatch.setattr(steps, "active_alarms", lambda keys, state_dir=None: {"error_rate.critical": "firing"})
    monkeypatch.setattr(steps, "within_warning", lambda s, d=None: time.sleep(0.03) or {"ok": False})
    said: list[str] = []
    runner.settle(catalog.get("cache-flush"), said.append)
    assert said[-1].startswith("alarms still active after") and "the pre-check will judge" in said[-1]
