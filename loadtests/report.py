"""A load run's report, beside Locust's own CSV and HTML: the verdict (JSON), JUnit XML with one test case
per threshold (so CI systems show each), a PNG plot (offered vs achieved rate, p50/p95/p99 and errors over
time, the thresholds as lines) and a Markdown summary; and ``compare``, which flags regressions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from loadtests import thresholds as th
from loadtests.recording import Recording
from loadtests.shapes import Shape
from pynomaly_ops.baselines import SEVERITIES, load

PLOT_WINDOW_S = 2
REGRESSION = 0.10  # compare: more than 10 % worse
COMPARE_MIN_REQUESTS = 100  # an endpoint's p95 is compared only over this many requests in both runs


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}{unit}" if abs(value) < 1000 else f"{value:.0f}{unit}"
    return f"{value}{unit}"


# --- JUnit --------------------------------------------------------------------------------------------------
def junit(v: dict[str, Any]) -> str:
    fail_on = v.get("fail_on", "warning")
    suite = ET.Element("testsuite", name=f"pynomaly-load-{v['shape']}")
    failures = errors = 0
    validity = ET.SubElement(suite, "testcase", classname=f"load.{v['shape']}", name="run is valid")
    if not v.get("valid", False):
        errors += 1
        ET.SubElement(validity, "error", message="; ".join(v.get("invalid_reasons", [])) or "invalid run")
    for t in v.get("thresholds", []):
        case = ET.SubElement(suite, "testcase", classname=f"load.{v['shape']}.{t['scope']}", name=t["name"])
        text = f"measured {_fmt(t['measured'])}, limit {t['limit']:g} ({t['severity']}, {t['source']}){t['detail']}"
        if t["passed"]:
            ET.SubElement(case, "system-out").text = text
        elif th.at_least(t["severity"], fail_on):
            failures += 1
            ET.SubElement(case, "failure", message=text)
        else:
            ET.SubElement(case, "system-out").text = f"missed, not failing the run (--fail-on {fail_on}): {text}"
    if v.get("aborted"):
        failures += 1
        case = ET.SubElement(suite, "testcase", classname=f"load.{v['shape']}", name="not aborted by the guard")
        ET.SubElement(case, "failure", message=str(v["aborted"]))
    suite.set("tests", str(len(suite)))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


# --- the plot ---------------------------------------------------------------------------------------------
def plot(run_dir: Path, v: dict[str, Any]) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recording = run_dir / "recording.json"
    if not recording.exists():
        return None
    rows = Recording.read(recording).series(PLOT_WINDOW_S)
    if not rows:
        return None
    b = load()
    x = [r["t"] for r in rows]
    fig, (ax_rate, ax_lat, ax_err) = plt.subplots(3, 1, sharex=True, figsize=(10, 8))
    ax_rate.plot(x, [r["offered_per_s"] for r in rows], label="offered", color="tab:grey", linestyle="--")
    ax_rate.plot(x, [r["achieved_per_s"] for r in rows], label="achieved", color="tab:blue")
    ax_rate.set_ylabel("requests/s")
    ax_rate.legend(loc="upper left", fontsize="small")
    nan = float("nan")
    for key, color in (("p50_ms", "tab:green"), ("p95_ms", "tab:purple"), ("p99_ms", "tab:red")):
        ax_lat.plot(x, [r[key] if r[key] is not None else nan for r in rows], label=key[:3], color=color)
    ax_lat.set_ylabel("response time ms")
    ax_err.plot(x, [r["error_percent"] for r in rows], color="tab:red", label="errors")
    ax_err.set_ylabel("errors %")
    ax_err.set_xlabel("seconds since the run started")
    for sev, style in zip(SEVERITIES, ("--", ":"), strict=True):
        ax_lat.axhline(b.thresholds.response_time_p95_ms.at(sev), color="grey", linestyle=style, label=f"p95 {sev}")
        ax_err.axhline(b.thresholds.error_rate_percent.at(sev), color="grey", linestyle=style, label=sev)
    ax_lat.axhline(b.normal.response_time_avg_ms.max, color="tab:olive", linestyle="-.", label="avg normal")
    ax_lat.legend(loc="upper left", fontsize="small")
    ax_err.legend(loc="upper left", fontsize="small")
    start = (v.get("judged_window_s") or [None])[0]
    for ax in (ax_rate, ax_lat, ax_err):
        if start is not None:
            ax.axvspan(0, start, color="grey", alpha=0.1)  # ramp-up: not judged
        for e in (v.get("scaling") or {}).get("events", []):
            ax.axvline(e["t"], color="tab:orange", alpha=0.5)
    for e in (v.get("scaling") or {}).get("events", []):
        ax_rate.annotate(e["event"], (e["t"], 1), xycoords=("data", "axes fraction"), rotation=90, va="top", fontsize=7)
    if v.get("knee_per_s") is not None:
        ax_rate.axhline(v["knee_per_s"], color="tab:green", linestyle=":", label="knee")
    fig.suptitle(f"load {v['shape']}: {v.get('message', '')[:100]}")
    fig.tight_layout()
    path = run_dir / "timeline.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --- Markdown --------------------------------------------------------------------------------------------------
def markdown(v: dict[str, Any]) -> str:
    lines = [
        f"# Load run: {v['shape']}",
        "",
        f"- **Verdict**: {v.get('message')} (exit {v.get('exit_code')})",
        f"- **Shape**: {v.get('description', '-')}",
        f"- **Target**: {(v.get('target') or {}).get('url', '-')}",
        f"- **Offered / achieved**: {_fmt(v.get('offered_per_s'))}/s / {_fmt(v.get('achieved_per_s'))}/s "
        f"({_fmt(100 * (v.get('achieved_ratio') or 0))} %, {v.get('dropped', 0)} dropped)",
        f"- **Requests**: {v.get('requests')}, failures {v.get('failures')}, expected 4xx {v.get('expected_4xx')}",
        f"- **Latency**: avg {_fmt(v.get('avg_ms'), ' ms')}, p50 {_fmt(v.get('p50_ms'), ' ms')}, "
        f"p95 {_fmt(v.get('p95_ms'), ' ms')}, p99 {_fmt(v.get('p99_ms'), ' ms')}",
        "",
    ]
    if v.get("steps") is not None:
        lines += [
            f"## Steps: knee {_fmt(v.get('knee_per_s'))}/s, broke at {_fmt(v.get('broke_at_per_s'))}/s",
            "",
            "| step | offered/s | achieved/s | p95 ms | errors % | held |",
            "| --- | --- | --- | --- | --- | --- |",
            *[
                f"| {s['step']} | {_fmt(s['offered_per_s'])} | {_fmt(s['achieved_per_s'])} | {_fmt(s['p95_ms'])} "
                f"| {_fmt(s['error_percent'])} | {'yes' if s['held'] else 'NO: ' + '; '.join(s['missed'])} |"
                for s in v["steps"]
            ],
            "",
        ]
    if v.get("drift"):
        d = v["drift"]
        drift = f"p95 {_fmt(d['p95_first_ms'])} -> {_fmt(d['p95_last_ms'])} ms"
        lines += [f"- **Drift** (first vs last tenth of the judged window): {drift}", ""]
    if v.get("scaling"):
        lines += ["## Scaling", "", *[f"- {e['t']:.1f}s {e['event']}: {e['detail']}" for e in v["scaling"]["events"]]]
        lines += [f"- note: {n}" for n in v["scaling"]["notes"]] + [""]
    lines += [
        "## Thresholds",
        "",
        "| threshold | measured | source | met |",
        "| --- | --- | --- | --- |",
        *[
            f"| {t['name']} | {_fmt(t['measured'])} | `{t['source']}` | {'yes' if t['passed'] else 'NO'} |"
            for t in v.get("thresholds", [])
        ],
        "",
        "![rate, latency and errors over time](timeline.png)",
        "",
    ]
    return "\n".join(lines)


def write(run_dir: Path, v: dict[str, Any], shape: Shape) -> dict[str, str]:
    (run_dir / "junit.xml").write_text(junit(v))
    png = plot(run_dir, v)
    (run_dir / "report.md").write_text(markdown(v))
    files = {"junit": "junit.xml", "report": "report.md", "verdict": "verdict.json"}
    if png:
        files["plot"] = png.name
    for name in ("locust.html", "locust_stats.csv", "recording.json"):
        if (run_dir / name).exists():
            files[name] = name
    return files


# --- compare ------------------------------------------------------------------------------------------------
def _verdict_of(path: Path) -> dict[str, Any]:
    file = path / "verdict.json" if path.is_dir() else path
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{file}: not a load run's verdict: {exc}") from None


def compare(a: Path, b: Path, limit: float = REGRESSION) -> list[dict[str, Any]]:
    """Run ``b`` against the baseline run ``a``: p95 (global and per endpoint) higher, or throughput lower,
    by more than ``limit``, is a regression."""
    va, vb = _verdict_of(a), _verdict_of(b)
    rows = []

    def row(what: str, old: float | None, new: float | None, higher_is_worse: bool) -> None:
        if old is None or new is None:
            return
        change = (new - old) / old if old else 0.0
        worse = change > limit if higher_is_worse else change < -limit
        rows.append({"metric": what, "a": old, "b": new, "change_percent": 100 * change, "regression": worse})

    row("p95_ms", va.get("p95_ms"), vb.get("p95_ms"), True)
    row("achieved_per_s", va.get("achieved_per_s"), vb.get("achieved_per_s"), False)
    p95_a, p95_b = _endpoint_p95(va), _endpoint_p95(vb)
    for scope in sorted(set(p95_a) & set(p95_b) - {"all"}):
        row(f"{scope} p95_ms", p95_a[scope], p95_b[scope], True)
    return rows


def _endpoint_p95(v: dict[str, Any]) -> dict[str, float]:
    return {
        t["scope"]: t["measured"]
        for t in v.get("thresholds", [])
        if t["metric"] == "p95_ms" and t["measured"] is not None and t["requests"] >= COMPARE_MIN_REQUESTS
    }
