"""``pynomaly-ops load ...``: load tests against the runbook baselines (Locust, headless).

Exit codes of ``load run``: 0 pass, 3 a threshold missed (the message names it, its limit and the measured
value), 4 an invalid run (the generator saturated or the offered rate was not achieved), 2 a usage error,
1 a remote run that could not start (no master, a busy one, workers missing).
``load compare`` exits 1 when run B regressed on run A by more than 10 % in p95 or throughput.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from loadtests import shapes, targets
from loadtests.remote import RemoteError
from loadtests.thresholds import LEVELS
from pynomaly_ops import terminal
from pynomaly_ops.baselines import BaselinesError, load

app = typer.Typer(no_args_is_help=True, help="Load tests against the runbook baselines (Locust).")
console = terminal.console()
err_console = terminal.console(stderr=True)
USAGE = 2
TARGETS = ("local",)


def _usage(message: str) -> None:
    err_console.print(f"[red]error:[/] {message}")
    raise typer.Exit(USAGE)


def _say(message: str) -> None:
    err_console.print(f"[green]>[/] {message}", highlight=False)


@app.command("shapes")
def list_shapes(
    target: Annotated[str, typer.Option("--target", help="Whose normal rate (load.normal_rate_per_s).")] = "local",
) -> None:
    """Every traffic shape, its levels (from baselines.yaml) and default duration."""
    b = load()
    table = Table("shape", "what", "rates (requests/s)", "duration", "fails on")
    for name in shapes.SHAPES:
        s = shapes.build(name, b, b.load.normal_rate(target))
        rates = sorted({round(st.rate_per_s, 2) for st in s.stages if st.label != "ramp-up"})
        shown = ", ".join(f"{r:g}" for r in rates[:8]) + (" ..." if len(rates) > 8 else "")
        table.add_row(name, s.description, shown, f"{s.duration_s:.0f}s", s.default_fail_on)
    console.print(table)


def _target(target: str | None, stack: str | None, url: str | None, outputs: Path | None, api_key: str | None):
    chosen = [x for x in (target, stack, url) if x]
    if len(chosen) > 1:
        _usage("give one of --target, --stack or --url")
    try:
        if url:
            return targets.url(url, api_key)
        if stack:
            return targets.stack(stack, outputs, api_key)
        if target not in (None, *TARGETS):
            _usage(f"unknown target {target!r}; the targets: {', '.join(TARGETS)} (or --stack NAME, --url URL)")
        t = targets.local()
        return t if not api_key else targets.Target(t.kind, t.name, t.url, api_key, t.outputs, t.state_dir)
    except targets.TargetError as exc:
        _usage(str(exc))


@app.command()
def run(
    shape: Annotated[str, typer.Option("--shape", help=f"One of: {', '.join(shapes.SHAPES)}.")] = "normal",
    target: Annotated[str | None, typer.Option("--target", help="local (default): the local stack.")] = None,
    stack: Annotated[str | None, typer.Option("--stack", help="A Pulumi stack: its outputs give the URL.")] = None,
    outputs: Annotated[
        Path | None, typer.Option("--outputs", help="With --stack: saved `pulumi stack output --json`.")
    ] = None,
    url: Annotated[str | None, typer.Option("--url", help="Any base URL of the API.")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar=targets.API_KEY_ENV, help="Bearer key.")] = None,
    duration: Annotated[
        str | None, typer.Option("--duration", help="90, 90s, 5m, 1h30m; default: the shape's.")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="Locust worker processes (1: one process).")] = 1,
    fail_on: Annotated[str | None, typer.Option("--fail-on", help=f"{'|'.join(LEVELS)}; default: the shape's.")] = None,
    min_throughput: Annotated[
        float | None, typer.Option("--min-throughput", help="Minimum requests/s over the judged window.")
    ] = None,
    rate: Annotated[float | None, typer.Option("--rate", help="Normal rate override (requests/s).")] = None,
    watch_scaling: Annotated[
        bool, typer.Option("--watch-scaling", help="With step or spike: the capacity's timeline.")
    ] = False,
    remote: Annotated[
        bool, typer.Option("--remote", help="With --stack: drive the stack's Locust master and workers on EKS.")
    ] = False,
    master_url: Annotated[
        str | None, typer.Option("--master-url", help="Drive the Locust master (web mode) at this URL instead.")
    ] = None,
    mix: Annotated[str, typer.Option("--mix", help="api (the API's traffic) or health (liveness only).")] = "api",
    max_users: Annotated[int | None, typer.Option("--max-users", help="Cap on concurrent users.")] = None,
    no_abort: Annotated[bool, typer.Option("--no-abort", help="Disable the abort guard.")] = False,
    reports: Annotated[Path, typer.Option("--reports", help="Where the run directories go.")] = Path("reports/loads"),
) -> None:
    """Run a traffic shape against a target, judge it against baselines.yaml, write the report."""
    from loadtests.runner import MAX_WORKERS, RunOptions
    from loadtests.runner import run as run_load

    if shape not in shapes.SHAPES:
        _usage(f"unknown shape {shape!r}; the shapes: {', '.join(shapes.SHAPES)}")
    if fail_on is not None and fail_on not in LEVELS:
        _usage(f"unknown --fail-on {fail_on!r}; the levels: {', '.join(LEVELS)}")
    if mix not in ("api", "health"):
        _usage(f"unknown --mix {mix!r}; the mixes: api, health")
    if not 1 <= workers <= MAX_WORKERS:
        _usage(f"--workers must be 1 to {MAX_WORKERS}, got {workers}")
    if watch_scaling and shape not in ("step", "spike"):
        _usage(f"--watch-scaling goes with --shape step or spike, not {shape}")
    if remote and not stack:
        _usage("--remote drives a stack's load generators: give --stack NAME (or --master-url URL for any master)")
    if remote and master_url:
        _usage("give --remote (the stack's master, through kubectl) or --master-url, not both")
    if rate is not None and rate <= 0:
        _usage("--rate must be above 0")
    try:
        seconds = shapes.parse_duration(duration) if duration else None
        b = load()
    except (shapes.ShapeError, BaselinesError) as exc:
        _usage(str(exc))
    t = _target(target, stack, url, outputs, api_key)
    built = shapes.build(shape, b, rate or b.load.normal_rate(t.name), seconds)
    options = RunOptions(
        built, t, workers, fail_on, min_throughput, watch_scaling, reports, mix, max_users, abort=not no_abort
    )
    try:
        verdict, run_dir = _run_remote(options, t, master_url) if remote or master_url else run_load(options, _say)
    except (RemoteError, targets.TargetError) as exc:
        err_console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    _print(verdict, run_dir)
    raise typer.Exit(verdict["exit_code"])


def _run_remote(options, t: targets.Target, master_url: str | None):
    from loadtests import remote

    if master_url:
        return remote.run(options, master_url, _say)
    with remote.port_forward(t) as url:
        return remote.run(options, url, _say)


def _print(v: dict, run_dir: Path) -> None:
    table = Table("threshold", "measured", "source", "met")
    for t in v.get("thresholds", []):
        if t["scope"] != "all" and t["passed"]:
            continue  # per-endpoint passes: in the report
        measured = "-" if t["measured"] is None else f"{t['measured']:.4g}"
        table.add_row(t["name"], measured, t["source"], "[green]yes[/]" if t["passed"] else "[red]NO[/]")
    console.print(table)
    for s in v.get("steps") or []:
        console.print(
            f"  {s['step']}: offered {s['offered_per_s']:.1f}/s achieved {s['achieved_per_s']:.1f}/s "
            f"p95 {s['p95_ms']} ms errors {s['error_percent']:.2f} % {'held' if s['held'] else 'BROKE'}"
        )
    if v.get("steps") is not None:
        console.print(f"capacity knee: {v.get('knee_per_s')} requests/s (broke at {v.get('broke_at_per_s')})")
    for e in (v.get("scaling") or {}).get("events", []):
        console.print(f"  scaling {e['t']:6.1f}s {e['event']}: {e['detail']}")
    if v.get("drift"):
        console.print(f"drift: {v['drift']}")
    colour = {0: "green", 3: "red", 4: "yellow"}.get(v["exit_code"], "red")
    console.print(f"[{colour}]{v['message']}[/] (exit {v['exit_code']})", highlight=False)
    console.print(f"report: {run_dir / 'report.md'}  junit: {run_dir / 'junit.xml'}", highlight=False)


@app.command()
def compare(
    a: Annotated[Path, typer.Argument(help="The baseline run (its directory or verdict.json).")],
    b: Annotated[Path, typer.Argument(help="The run to judge against it.")],
) -> None:
    """Flag regressions of run B on run A over 10 % in p95 or throughput; exit 1 if any."""
    from loadtests.report import REGRESSION
    from loadtests.report import compare as compare_runs

    try:
        rows = compare_runs(a, b)
    except ValueError as exc:
        _usage(str(exc))
    table = Table("metric", "A", "B", "change", "regression")
    for r in rows:
        flag = "[red]REGRESSION[/]" if r["regression"] else "ok"
        table.add_row(r["metric"], f"{r['a']:.4g}", f"{r['b']:.4g}", f"{r['change_percent']:+.1f} %", flag)
    console.print(table)
    regressions = [r for r in rows if r["regression"]]
    if regressions:
        err_console.print(f"[red]{len(regressions)} regression(s) over {100 * REGRESSION:g} %[/]")
        raise typer.Exit(1)
