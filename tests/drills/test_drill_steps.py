"""Steps that take their arguments from earlier steps' results (the recovery drills' chain), without servers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from drills import session, steps


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
    monkeypatch.setattr(steps.recovery, "restore_objects", lambda prefix, before: {"seconds": 1.5, "p": prefix})
    steps.recover(
        "restore_objects",
        "objects restored",
        from_events={"prefix": "objects seeded.prefix", "before": "fault injected.time"},
    )
    assert marked == [("objects restored", {"seconds": 1.5, "p": "drills/b/"})]
