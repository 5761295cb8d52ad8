"""``pynomaly-ops drill ...``: list the drills and run them against the local stack or a stack on AWS."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from aws_target.outputs import STACK_ENV
from drills import catalog
from drills.targets import VIA_API, VIA_FIS, DrillError
from local.layout import STATE_ENV
from local.stack import StackError
from pynomaly_ops import terminal
from pynomaly_ops.baselines import Baselines, load
from pynomaly_ops.stack_outputs import OutputsError

app = typer.Typer(no_args_is_help=True, help="The monthly failure-injection drills (Chaos Toolkit experiments).")
console = terminal.console()
err_console = terminal.console(stderr=True)


@app.command("list")
def list_drills() -> None:
    """Every drill: the runbook procedure it rehearses, its objectives (from baselines.yaml) and targets."""
    b = load()
    table = Table("drill", "runbook procedure", "objectives", "targets")
    for d in catalog.DRILLS:
        table.add_row(d.name, d.procedure, "\n".join(_objective(o, d, b) for o in d.objectives), _targets(d))
    console.print(table)


def _objective(o: catalog.Objective, d: catalog.Drill, b: Baselines) -> str:
    limits = {t: o.limit_for(b, t) for t in d.targets}
    if len(set(limits.values())) == 1:
        return f"{o.what} {o.comparison} {next(iter(limits.values())):g}"
    return f"{o.what} {o.comparison} " + ", ".join(f"{v:g} ({t})" for t, v in limits.items())


def _targets(d: catalog.Drill) -> str:
    notes = {catalog.LOCAL: " (zones: `local up --zones`)" if d.needs_zones else "",
             catalog.AWS: " (EKS)" if "cluster_name" in d.needs_outputs else ""}  # fmt: skip
    return ", ".join(t + notes[t] for t in d.targets)


@app.command()
def run(
    names: Annotated[list[str] | None, typer.Argument(help="Drills to run, in order.")] = None,
    run_all: Annotated[bool, typer.Option("--all", help="Every drill: the monthly drill.")] = False,
    state_dir: Annotated[
        Path | None, typer.Option("--state-dir", envvar=STATE_ENV, help="The local stack (default .local-stack/).")
    ] = None,
    reports: Annotated[Path, typer.Option("--reports", help="Where the reports go.")] = Path("reports/drills"),
    target: Annotated[
        str, typer.Option("--target", help="local (the default: the local stack) or aws (a Pulumi stack, --stack).")
    ] = "local",
    stack: Annotated[
        str | None, typer.Option("--stack", envvar=STACK_ENV, help="The Pulumi stack, with --target aws.")
    ] = None,
    outputs: Annotated[
        Path | None,
        typer.Option("--outputs", help="A saved `pulumi stack output --json` (default: the Pulumi CLI)."),
    ] = None,
    confirm_production: Annotated[
        bool, typer.Option("--confirm-production", help="Needed to drill the prod stack.")
    ] = False,
    via: Annotated[
        str,
        typer.Option(
            "--via",
            help="With --target aws: api (the fault library's calls) or fis (the stack's FIS "
            "experiment templates, fis.enabled).",
        ),
    ] = "api",
) -> None:
    """Run drills against the local stack (brought up if down, and left as found) or, with --target aws, a
    Pulumi stack's resources; exit 1 if any fails, 2 if they cannot run."""
    from drills.runner import Stack
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

    if target not in catalog.BOTH:
        err_console.print(f"[red]error:[/] --target {target!r}: the drills' targets are {', '.join(catalog.BOTH)}")
        raise typer.Exit(2)
    if (target == catalog.AWS) != bool(stack) or (outputs and target != catalog.AWS):
        err_console.print("[red]error:[/] --target aws needs --stack NAME (and takes --outputs FILE); the local "
                          "target takes neither")  # fmt: skip
        raise typer.Exit(2)
    if via not in (VIA_API, VIA_FIS) or (via == VIA_FIS and target != catalog.AWS):
        err_console.print(f"[red]error:[/] --via {via!r}: {VIA_API} or {VIA_FIS}, and {VIA_FIS} with --target aws only")
        raise typer.Exit(2)
    aws = Stack(stack, outputs, confirm_production, via) if target == catalog.AWS and stack else None
    try:
        outcomes = run_drills(chosen, say, state_dir, reports, skip_needing_zones=run_all, stack=aws)
    except (StackError, DrillError, OutputsError) as exc:
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
