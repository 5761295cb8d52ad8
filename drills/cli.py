"""``pynomaly-ops drill ...``: list the drills and run them against the local stack."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from drills import catalog
from local.layout import STATE_ENV
from local.stack import StackError
from pynomaly_ops import terminal
from pynomaly_ops.baselines import load

app = typer.Typer(no_args_is_help=True, help="The monthly failure-injection drills (Chaos Toolkit experiments).")
console = terminal.console()
err_console = terminal.console(stderr=True)


@app.command("list")
def list_drills() -> None:
    """Every drill: the runbook procedure it rehearses, its objectives (from baselines.yaml) and targets."""
    b = load()
    table = Table("drill", "runbook procedure", "objectives", "targets")
    for d in catalog.DRILLS:
        objectives = "\n".join(f"{o.what} {o.comparison} {o.limit(b):g}" for o in d.objectives)
        targets = ", ".join(
            f"{t} (zones: `local up --zones`)" if d.needs_zones and t == "local" else t for t in d.targets
        )
        table.add_row(d.name, d.procedure, objectives, targets)
    console.print(table)


@app.command()
def run(
    names: Annotated[list[str] | None, typer.Argument(help="Drills to run, in order.")] = None,
    run_all: Annotated[bool, typer.Option("--all", help="Every drill: the monthly drill.")] = False,
    state_dir: Annotated[
        Path | None, typer.Option("--state-dir", envvar=STATE_ENV, help="The local stack (default .local-stack/).")
    ] = None,
    reports: Annotated[Path, typer.Option("--reports", help="Where the reports go.")] = Path("reports/drills"),
) -> None:
    """Run drills against the local stack (brought up if down, and left as found); exit 1 if any fails."""
    from drills.runner import run as run_drills

    if run_all == bool(names):
        err_console.print(f"[red]error:[/] name drills or give --all; the drills: {', '.join(catalog.BY_NAME)}")
        raise typer.Exit(2)
    try:
        chosen = list(catalog.DRILLS) if run_all else [catalog.get(n) for n in names or []]
    except catalog.UnknownDrill as exc:
        err_console.print(f"[red]error:[/] {exc.args[0]}")
        raise typer.Exit(2) from None

    def say(message: str) -> None:
        err_console.print(f"[green]>[/] {message}")

    try:
        outcomes = run_drills(chosen, say, state_dir, reports, skip_needing_zones=run_all)
    except StackError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    table = Table("drill", "verdict", "objectives", "report")
    for o in outcomes:
        figures = "\n".join(
            f"{'ok ' if x['met'] else 'MISSED '}{x['objective']}: {_fmt(x['measured'])} ({x['limit']})"
            for x in o.summary["objectives"]
        )
        problems = "\n".join(o.summary["problems"])
        verdict = "[green]PASS[/]" if o.passed else f"[red]FAIL[/] {problems}"
        table.add_row(o.drill, verdict, figures, str(o.run_dir / "report.md"))
    console.print(table)
    if not all(o.passed for o in outcomes):
        raise typer.Exit(1)


def _fmt(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
