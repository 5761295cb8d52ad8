"""What users felt, computed from a drill's records (requests.jsonl, writes.jsonl, session.json)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.recorders import (
    RequestRecord,
    WriteAttempt,
    error_rate_percent,
    outage_windows,
    p95_latency_s,
    write_outage,
)
from pynomaly_ops.alarms import SERVICE_DOWN
from pynomaly_ops.baselines import Baselines

WINDOW_S = 5.0  # the rolling window p95 and error rate are plotted and judged over
FAULT = "fault injected"
# A lost zone coming back: what happens after it (a second outage?) is measured apart from the fault's.
ZONE_BACK = ("zone healed", "zone powered on")


@dataclass(frozen=True)
class Records:
    requests: list[RequestRecord]
    session: dict[str, Any]

    @classmethod
    def read(cls, run_dir: Path) -> Records:
        rows = [json.loads(line) for line in (run_dir / "requests.jsonl").read_text().splitlines() if line]
        records = [RequestRecord(r["t"], r["at"], r["status"], r["error"], r["latency_s"]) for r in rows]
        return cls(records, json.loads((run_dir / "session.json").read_text()))

    def event_at(self, name: str) -> float | None:
        return next((e["at"] for e in self.session["events"] if e["event"] == name), None)

    def event_detail(self, name: str) -> Any:
        return next((e["detail"] for e in self.session["events"] if e["event"] == name), None)


def windows(records: list[RequestRecord], width_s: float = WINDOW_S) -> list[dict[str, Any]]:
    """Consecutive windows of ``width_s`` (wall clock): requests/s, error rate, p95 (ms)."""
    if not records:
        return []
    start, out = records[0].at, []
    end = max(r.at for r in records)
    t = start
    while t <= end:
        inside = [r for r in records if t <= r.at < t + width_s]
        p95 = p95_latency_s(inside)
        out.append(
            {
                "at": t,
                "rate_per_s": len(inside) / width_s,
                "error_rate_percent": error_rate_percent(inside),
                "p95_ms": None if p95 is None else 1000 * p95,
            }
        )
        t += width_s
    return out


def p95_back_s(records: list[RequestRecord], since: float, warning_ms: float) -> float:
    """Seconds from ``since`` until the rolling p95 stays under ``warning_ms`` (0 if it never went over)."""
    over = [w for w in windows([r for r in records if r.at >= since]) if w["p95_ms"] is not None]
    late = [w for w in over if w["p95_ms"] >= warning_ms]
    return 0.0 if not late else late[-1]["at"] + WINDOW_S - since


def user_recovery_s(records: list[RequestRecord], since: float) -> float:
    """Seconds from ``since`` until the first success after the last failed request (0 if none failed)."""
    after = [w for w in outage_windows(records) if w["start_at"] >= since - WINDOW_S]
    return 0.0 if not after else max(0.0, after[-1]["start_at"] + after[-1]["seconds"] - since)


def _write_outage_since(run_dir: Path, since: float) -> float:
    """The first write outage that starts after ``since`` (0: none), from the drill's writes.jsonl."""
    rows = [json.loads(line) for line in (run_dir / "writes.jsonl").read_text().splitlines() if line]
    fields = ("id", "t", "at", "latency_s", "error")
    after = [WriteAttempt(**{k: r[k] for k in fields}) for r in rows if r["at"] >= since]
    return write_outage(after)["seconds"] or 0.0


def measure(run_dir: Path, b: Baselines) -> dict[str, Any]:
    """Every figure a drill's objectives and report use."""
    rec = Records.read(run_dir)
    requests = rec.requests
    fault_at = rec.event_at(FAULT)
    since = fault_at if fault_at is not None else (requests[0].at if requests else 0.0)
    p95 = p95_latency_s(requests)
    alarms = rec.session.get("alarms", {})
    detected = {key: min(states.values()) - since for key, states in alarms.items() if states}
    # Detection is the first alarm raised after the fault; one raised before it was not caused by it.
    first = min(((k, v) for k, v in detected.items() if v >= 0), key=lambda kv: kv[1], default=None)
    m: dict[str, Any] = {
        "requests": len(requests),
        "failed": sum(not r.ok for r in requests),
        "error_rate_percent": error_rate_percent(requests),
        "p95_ms": None if p95 is None else 1000 * p95,
        "longest_outage_s": max((w["seconds"] for w in outage_windows(requests)), default=0.0),
        "user_recovery_s": user_recovery_s(requests, since),
        "p95_back_s": p95_back_s(requests, since, b.thresholds.response_time_p95_ms.warning),
        "fault_at": fault_at,
        "alarms_fired": detected,
        "first_alarm": None if first is None else {"key": first[0], "after_s": first[1]},
        # The P0 "service down" page (the catalogue's SERVICE_DOWN), raised at any time during the drill.
        "p0_alarms_raised": sum(key in SERVICE_DOWN for key in alarms),
        "aborted": rec.session.get("aborted_at") is not None,
        "aborted_because": rec.session.get("aborted_because"),
        "alarm_polls_failed": rec.session.get("alarm_polls_failed", 0),
        "events": rec.session["events"],
    }
    writes = rec.session.get("writes")
    if writes:
        m["writes_acknowledged"] = writes["acknowledged"]
        m["writes_lost"] = writes["lost_writes"]
        m["writes_lost_window_s"] = writes.get("lost_window_s")
        m["write_outage_s"] = writes["outage"]["seconds"] or 0.0  # None: no write failed
        back_at = next((at for e in ZONE_BACK if (at := rec.event_at(e)) is not None), None)
        if back_at is not None:
            m["write outage after the zone came back (s)"] = _write_outage_since(run_dir, back_at)
    for event in rec.session["events"]:  # figures the experiment's own waits measured
        detail = event.get("detail")
        if isinstance(detail, dict):
            if "seconds" in detail:
                m[f"{event['event']} (s)"] = detail["seconds"]
            m.update(detail.get("figures") or {})
    return m
