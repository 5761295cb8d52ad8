"""The incident-report shaped outputs from synthetic summaries: the verdict, every objective, the timeline in
order, the HTML page, and the PNG plot."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from drill_testkit import T0, event, requests, session, write_run

from drills import catalog, measures, report
from drills.measures import FAULT
from pynomaly_ops.baselines import load

PNG = b"\x89PNG\r\n\x1a\n"
EVENTS = [
    event("measurement started", 0),
    event(FAULT, 20, {"fault": "kill_database_primary", "member": "pg-a"}),
    event("new database primary", 27.5, {"leader": "pg-b", "seconds": 7.5}),
    event("old primary rejoined", 41, {"leader": "pg-b", "seconds": 21.0}),
    event("measurement stopped", 55),
]


def _summary(passed: bool, tmp_path) -> dict[str, Any]:
    drill = catalog.get("database-failover")
    alarms = {"error_rate.critical": {"pending": T0 + 23.0, "firing": T0 + 25.0}}
    writes = {
        "table": "drill_write_probe",
        "attempts": 6012,
        "acknowledged": 6000,
        "errors": 12,
        "outage": {"seconds": 6.5 if passed else 130.0, "first_failure_at": T0 + 20.1, "recovered": True},
        "lost_writes": 0,
        "lost_ids": [],
        "error_kinds": ["OperationalError"],
    }
    run_dir = write_run(tmp_path / "run", requests(55, failing=lambda s: 20 <= s < 21), session(EVENTS, alarms, writes))
    m = measures.measure(run_dir, load())
    objectives = drill.verdict(load(), m)
    differences = {} if passed else {"redis_roles": {"before": ["master", "slave"], "after": "unreadable: x"}}
    return report.summary(
        drill,
        {
            "passed": passed,
            "problems": [] if passed else ["ROLLBACK FAILED: stop-measuring-if-still-running"],
            "started": "2023-11-14T22:13:20+00:00",
            "duration_s": 61.34,
            "objectives": objectives,
            "measurements": m,
            "topology_before": {},
            "topology_after": {},
            "topology_differences": differences,
            "restored": passed,
            "restore_wait_s": 0.0,
            "chaos_status": "completed",
        },
    )


def _timeline_lines(md: str) -> list[str]:
    section = md.split("## Timeline (UTC)\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("- ")]


@pytest.mark.parametrize("passed", [True, False], ids=["passed", "failed"])
def test_the_markdown_report(tmp_path, passed):
    s = _summary(passed, tmp_path)
    md = report.markdown(s)
    assert md.startswith("# Incident Report: drill database-failover\n")
    if passed:
        assert "- **Verdict**: PASS\n" in md
        assert [o["met"] for o in s["objectives"]] == [True, True, True]
        assert "restored" in md and "NOT restored" not in md
    else:
        assert "- **Verdict**: FAIL (ROLLBACK FAILED: stop-measuring-if-still-running)\n" in md
        assert [o["met"] for o in s["objectives"]] == [False, True, True]
        assert 'NOT restored: {"redis_roles"' in md
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == len(s["objectives"]) == 3
    for o, row in zip(s["objectives"], rows, strict=True):
        assert row.startswith(f"| {o['objective']} |")
        assert f"| {o['limit']} | `{o['source']}` | {'yes' if o['met'] else 'NO'} |" in row
    assert "- **Runbook procedure**: 000 Emergency Procedures (Database Issues)" in md
    assert "- **Data Impact**: 0 acknowledged writes lost" in md
    assert "- **Detection**: `error_rate.critical` raised 3.0 s after the fault" in md
    assert "- **Duration**: 61.3 s" in md
    assert "Injected: the PostgreSQL primary lost" in md


def test_the_timeline_is_in_time_order_with_the_alarm_in_its_place(tmp_path):
    s = _summary(True, tmp_path)
    s["measurements"]["events"] = [EVENTS[i] for i in (0, 3, 1, 4, 2)]  # order of the records is not trusted
    lines = _timeline_lines(report.markdown(s))
    assert [line.split(" - ", 1)[1] for line in lines] == [
        "measurement started",
        FAULT,
        "alarm error_rate.critical raised (pending or firing)",
        "new database primary",
        "old primary rejoined",
        "measurement stopped",
    ]
    clocks = [re.match(r"- \*\*(\d\d:\d\d:\d\d\.\d{3})\*\*", line).group(1) for line in lines]  # type: ignore[union-attr]
    assert clocks == sorted(clocks)
    assert clocks[1] == "22:13:40.000"  # the fault at T0 + 20 s, in UTC


def test_a_report_without_measurements(tmp_path):
    s = _summary(False, tmp_path)
    s.update(measurements=None, objectives=[], problems=["refused: the steady state was broken before the fault (x)"])
    md = report.markdown(s)
    assert "FAIL (refused: the steady state was broken before the fault (x))" in md
    assert "- **Data Impact**: no writes recorded by this drill" in md
    assert "- **Detection**: no alarm of the catalogue was raised" in md


@pytest.mark.parametrize("passed", [True, False], ids=["passed", "failed"])
def test_the_html_page(tmp_path, passed):
    s = _summary(passed, tmp_path)
    page = report.html_page(s, report.markdown(s))
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert f"<body class='{'pass' if passed else 'fail'}'>" in page
    assert "<h1>Incident Report: drill database-failover</h1>" in page
    assert f"<p>&bull; Verdict: {'PASS' if passed else 'FAIL'}" in page
    assert page.count("<table>") == page.count("</table>") == 1
    assert "<tr><th>objective</th><th>measured</th>" in page
    for o in s["objectives"]:
        limit = o["limit"].replace("<", "&lt;")
        assert f"<td>{o['objective']}</td>" in page
        assert f"<td>{limit}</td><td>`{o['source']}`</td><td>{'yes' if o['met'] else 'NO'}</td>" in page
    positions = [page.index(e["event"]) for e in EVENTS]
    assert positions == sorted(positions)
    assert '<img src="timeline.png"' in page


def test_the_plot_is_a_png(tmp_path):
    s = _summary(False, tmp_path)
    path = report.plot(tmp_path / "run", s, load())
    assert path == tmp_path / "run" / "timeline.png"
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 10_000


def test_no_records_no_plot(tmp_path):
    assert report.plot(tmp_path, _summary(True, tmp_path / "elsewhere"), load()) is None


def test_write_leaves_the_four_files(tmp_path):
    s = _summary(True, tmp_path)
    report.write(tmp_path / "run", s, load())
    run = tmp_path / "run"
    assert json.loads((run / "summary.json").read_text())["objectives"] == s["objectives"]
    assert (run / "report.md").read_text() == report.markdown(s)
    assert (run / "report.html").read_text().startswith("<!doctype html>")
    assert (run / "timeline.png").read_bytes()[:8] == PNG
