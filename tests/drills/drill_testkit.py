"""Synthetic drill records for the unit tests: request records at a fixed rate, and a run directory in the
shape ``drills.session.finish`` writes (``requests.jsonl`` and ``session.json``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from local.recorders import RequestRecord, WriteAttempt, write_jsonl

T0 = 1_700_000_000.0  # wall clock of the first request
M0 = 5_000.0  # the monotonic clock at the same moment
RATE_PER_S = 20
FAST_S = 0.05


def requests(
    seconds: float,
    failing: Callable[[float], bool] = lambda s: False,
    latency: Callable[[float], float] = lambda s: FAST_S,
) -> list[RequestRecord]:
    """One request every 1/RATE_PER_S s for ``seconds``; ``failing(s)`` and ``latency(s)`` take the seconds
    since T0 of the request's scheduled start. A failed request is a refused connection (no status)."""
    records = []
    for i in range(round(seconds * RATE_PER_S)):
        s = i / RATE_PER_S
        if failing(s):
            records.append(RequestRecord(M0 + s, T0 + s, None, "ConnectError: refused", 0.001))
        else:
            records.append(RequestRecord(M0 + s, T0 + s, 200, None, latency(s)))
    return records


def write_attempts(seconds: float, failing: Callable[[float], bool] = lambda s: False) -> list[WriteAttempt]:
    """One INSERT every 1/RATE_PER_S s for ``seconds``, as ``requests``; ``failing(s)`` ones refused."""
    attempts = []
    for i in range(round(seconds * RATE_PER_S)):
        s = i / RATE_PER_S
        attempts.append(WriteAttempt(i + 1, M0 + s, T0 + s, FAST_S, "refused" if failing(s) else None))
    return attempts


def event(name: str, s: float, detail: Any = None) -> dict[str, Any]:
    return {"event": name, "at": T0 + s, "detail": detail}


def session(
    events: list[dict[str, Any]],
    alarms: dict[str, dict[str, float]] | None = None,
    writes: dict[str, Any] | None = None,
    aborted_at: float | None = None,
    drill: str = "instance-loss",
    aborted_because: str = "the critical error rate held for 20 s",
) -> dict[str, Any]:
    """What ``drills.session.finish`` writes to session.json."""
    data: dict[str, Any] = {
        "drill": drill,
        "events": events,
        "alarms": alarms or {},
        "alarms_active_before": [],
        "aborted_at": aborted_at,
        "aborted_because": aborted_because if aborted_at is not None else None,
    }
    if writes is not None:
        data["writes"] = writes
    return data


def writes_summary(acknowledged: int, lost: int | None, outage_s: float | None) -> dict[str, Any]:
    """The shape of ``local.recorders.WriteRecorder.summary``."""
    errors = 0 if outage_s is None else 12
    return {
        "table": "drill_write_probe",
        "attempts": acknowledged + errors,
        "acknowledged": acknowledged,
        "errors": errors,
        "outage": {
            "seconds": outage_s,
            "first_failure_at": None if outage_s is None else T0 + 20.1,
            "recovered": True,
        },
        "lost_writes": lost,
        "lost_ids": None if lost is None else list(range(1, lost + 1)),
        "lost_window_s": None if lost is None else 0.1 * lost,
        "error_kinds": [] if outage_s is None else ["OperationalError"],
    }


def write_run(
    run_dir: Path, records: list[RequestRecord], data: dict[str, Any], writes: list[WriteAttempt] | None = None
) -> Path:
    """The files ``drills.session.finish`` leaves in a run directory (``writes.jsonl`` for a drill that writes)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(run_dir / "requests.jsonl", (r.as_dict() for r in records))
    if writes is not None:
        write_jsonl(run_dir / "writes.jsonl", (w.as_dict() for w in writes))
    write_jsonl(run_dir / "extra-requests.jsonl", [])
    (run_dir / "session.json").write_text(json.dumps(data, indent=2) + "\n")
    return run_dir
