"""A drill's report, in the incident-report shape of runbook 002: summary, impact, timeline, root cause (the
injected fault), resolution, and each objective with its measured value. Written as JSON, Markdown, HTML
and a PNG plot of requests/s, errors and p95 over time with the fault, detection and recovery marked."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drills.catalog import Drill
from drills.measures import Records, windows
from pynomaly_ops.baselines import SEVERITIES, Baselines

PLOT_WINDOW_S = 1.0


def _clock(at: float | None) -> str:
    return "-" if at is None else datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S.%f")[:-3]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def summary(drill: Drill, result: dict[str, Any]) -> dict[str, Any]:
    return {"drill": drill.name, "procedure": drill.procedure, "fault": drill.fault, **result}


def timeline(m: dict[str, Any]) -> list[tuple[float, str]]:
    rows = [(e["at"], e["event"]) for e in m.get("events", [])]
    if m.get("fault_at") is not None:
        for key, after in sorted(m.get("alarms_fired", {}).items(), key=lambda kv: kv[1]):
            rows.append((m["fault_at"] + after, f"alarm {key} raised (pending or firing)"))
    return sorted(rows)


def markdown(s: dict[str, Any]) -> str:
    m = s.get("measurements") or {}
    lines = [
        f"# Incident Report: drill {s['drill']}",
        "",
        "## Summary",
        f"- **Verdict**: {_verdict(s)}",
        f"- **Runbook procedure**: {s['procedure']}",
        f"- **Start Time**: {s['started']}",
        f"- **Duration**: {s['duration_s']:.1f} s",
        "- **Severity**: drill (injected on purpose)",
        "",
        "## Impact",
        f"- **Requests measured**: {_fmt(m.get('requests'))}, failed {_fmt(m.get('failed'))} "
        f"({_fmt(m.get('error_rate_percent'))} %)",
        f"- **p95 over the drill**: {_fmt(m.get('p95_ms'))} ms; longest outage {_fmt(m.get('longest_outage_s'))} s",
        f"- **Data Impact**: {_fmt(m.get('writes_lost'))} acknowledged writes lost"
        if "writes_lost" in m
        else "- **Data Impact**: no writes recorded by this drill",
        f"- **Detection**: {_detection(m)}",
        "",
        "## Timeline (UTC)",
        *[f"- **{_clock(at)}** - {what}" for at, what in timeline(m)],
        "",
        "## Root Cause",
        f"Injected: {s['fault']}.",
        "",
        "## Resolution",
        "Recovery was awaited with deadlines, the rollbacks were played and the topology compared with the one "
        f"found before: {'restored' if s['restored'] else 'NOT restored: ' + json.dumps(s['topology_differences'])}.",
        "",
        "## Objectives",
        "| objective | measured | limit | from baselines.yaml | met |",
        "| --- | --- | --- | --- | --- |",
        *[_objective_row(o) for o in s["objectives"]],
        "",
        "![requests, errors and p95 over time](timeline.png)",
        "",
    ]
    return "\n".join(lines)


def _verdict(s: dict[str, Any]) -> str:
    verdict = "PASS" if s["passed"] else "FAIL"
    return f"{verdict} ({'; '.join(s['problems'])})" if s["problems"] else verdict


def _objective_row(o: dict[str, Any]) -> str:
    met = "yes" if o["met"] else "NO"
    return f"| {o['objective']} | {_fmt(o['measured'])} | {o['limit']} | `{o['source']}` | {met} |"


def _detection(m: dict[str, Any]) -> str:
    first = m.get("first_alarm")
    found = "no alarm of the catalogue was raised" if not first else (
        f"`{first['key']}` raised {first['after_s']:.1f} s after the fault")  # fmt: skip
    if failed := m.get("alarm_polls_failed"):
        found += f" ({failed} polls of the alarms failed: detection, and the abort on an alarm, missed those)"
    return found


def html_page(s: dict[str, Any], md: str) -> str:
    """The Markdown report as a self-contained page (headings, lists and the table; nothing else is used)."""
    body, in_table = [], False
    for line in md.splitlines():
        text = html.escape(line)
        if line.startswith("| ---"):
            continue
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            tag = "th" if not in_table else "td"
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("# "):
            body.append(f"<h1>{text[2:]}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{text[3:]}</h2>")
        elif line.startswith("- "):
            body.append(f"<p>&bull; {text[2:].replace('**', '')}</p>")
        elif line.startswith("!["):
            body.append('<img src="timeline.png" alt="requests, errors and p95 over time" width="900">')
        elif line:
            body.append(f"<p>{text}</p>")
    verdict = "pass" if s["passed"] else "fail"
    style = (
        "body{font-family:sans-serif;max-width:960px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:4px 8px}.pass h1{color:#1a7f37}.fail h1{color:#cf222e}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>drill {html.escape(s['drill'])}</title>"
        f"<style>{style}</style></head><body class='{verdict}'>{''.join(body)}</body></html>\n"
    )


def plot(run_dir: Path, s: dict[str, Any], b: Baselines) -> Path | None:
    """requests/s, error rate and p95 over time, thresholds as lines, fault/detection/recovery marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not (run_dir / "requests.jsonl").exists():
        return None
    rows = windows(Records.read(run_dir).requests, PLOT_WINDOW_S)
    if not rows:
        return None
    m = s.get("measurements") or {}
    t0 = rows[0]["at"]
    x = [r["at"] - t0 for r in rows]
    fig, (ax_rate, ax_err, ax_p95) = plt.subplots(3, 1, sharex=True, figsize=(10, 7))
    ax_rate.plot(x, [r["rate_per_s"] for r in rows], color="tab:blue")
    ax_rate.set_ylabel("requests/s")
    ax_err.plot(x, [r["error_rate_percent"] for r in rows], color="tab:red")
    ax_err.set_ylabel("errors %")
    ax_p95.plot(x, [r["p95_ms"] if r["p95_ms"] is not None else float("nan") for r in rows], color="tab:purple")
    ax_p95.set_ylabel("p95 ms")
    ax_p95.set_xlabel("seconds since the measurement started")
    for sev, style in zip(SEVERITIES, ("--", ":"), strict=True):
        ax_err.axhline(b.thresholds.error_rate_percent.at(sev), color="grey", linestyle=style, label=sev)
        ax_p95.axhline(b.thresholds.response_time_p95_ms.at(sev), color="grey", linestyle=style, label=sev)
    ax_err.legend(loc="upper right", fontsize="small")
    marks = [(at - t0, what) for at, what in timeline(m) if what != "measurement started"]
    for ax in (ax_rate, ax_err, ax_p95):
        for t, _ in marks:
            ax.axvline(t, color="tab:orange", alpha=0.5)
    for t, what in marks:
        ax_rate.annotate(what, (t, 1), xycoords=("data", "axes fraction"), rotation=90, va="top", fontsize=7)
    fig.suptitle(f"drill {s['drill']}: {'PASS' if s['passed'] else 'FAIL'}")
    fig.tight_layout()
    path = run_dir / "timeline.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write(run_dir: Path, s: dict[str, Any], b: Baselines) -> None:
    (run_dir / "summary.json").write_text(json.dumps(s, indent=2, default=str) + "\n")
    plot(run_dir, s, b)
    md = markdown(s)
    (run_dir / "report.md").write_text(md)
    (run_dir / "report.html").write_text(html_page(s, md))
