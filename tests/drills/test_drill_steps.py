"""Steps that take their arguments from earlier steps' results (the recovery drills' chain), without servers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from drills import session, steps
from local import faults as local_faults
from local import recovery as local_recovery


@pytest.fixture
def timeline(monkeypatch):
    events = [
        {"event": "objects seeded", "at": 1.0, "detail": {"prefix": "drills/a/", "expected": {"k": "h"}}},
        {"event": "fault injected", "at": 2.0, "detail": {"fault": "corrupt_objects", "time": 2}},
        {"event": "objects seeded", "at": 3.0, "detail": {"prefix": "drills/b/"}},
    ]
    monkeypatch.setattr(session, "current", lambda: SimpleNamespace(events=events))
    return events


def test_an_argument_comes_from_the_latest_step_marked_with_that_event(timeline):
    wanted = {"prefix": "objects seeded.prefix", "before": "fault injected.time"}
    assert steps._from_events(wanted) == {"prefix": "drills/b/", "before": 2}


def test_a_missing_step_or_key_is_named(timeline):
    with pytest.raises(session.DrillError, match="'expected' from the step marked 'objects seeded'"):
        steps._from_events({"expected": "objects seeded.expected"})  # the latest seeding has none
    with pytest.raises(session.DrillError, match="'seconds' from the step marked 'backup taken'"):
        steps._from_events({"x": "backup taken.seconds"})


def test_recover_marks_the_procedures_result_as_its_event(timeline, monkeypatch):
    marked = []
    monkeypatch.setattr(session, "mark", lambda event, detail: marked.append((event, detail)) or detail)
    monkeypatch.setattr(local_recovery, "restore_objects", lambda prefix, before: {"seconds": 1.5, "p": prefix})
    steps.recover(
        "restore_objects",
        "objects restored",
        from_events={"prefix": "objects seeded.prefix", "before": "fault injected.time"},
    )
    assert marked == [("objects restored", {"seconds": 1.5, "p": "drills/b/"})]


def test_nothing_is_injected_or_acted_in_a_method_unless_the_drill_is_measuring(monkeypatch):
    """A start refused (another drill holds the target) fails its step, and Chaos Toolkit goes on with the
    method: the fault, a recovery procedure and a method's action must refuse, while a rollback still runs."""
    ran: list[str] = []
    monkeypatch.setattr(local_faults, "kill_process", lambda name: ran.append(name) or {"pid": 1})
    monkeypatch.setattr(local_faults, "ensure_running", lambda name: ran.append(f"rollback {name}") or {})
    monkeypatch.setattr(local_recovery, "seed_objects", lambda: ran.append("seed") or {})
    assert session._SESSION is None
    with pytest.raises(session.DrillError, match="no drill measurement is running"):
        steps.inject("kill_process", {"name": "api-1"})
    with pytest.raises(session.DrillError, match="no drill measurement is running"):
        steps.recover("seed_objects", "objects seeded")
    with pytest.raises(session.DrillError, match="no drill measurement is running"):
        steps.act("kill_process", {"name": "api-2"}, event="a method's step")
    assert ran == []
    steps.act("ensure_running", {"name": "api-1"})  # a rollback: no event, no session needed
    assert ran == ["rollback api-1"]
