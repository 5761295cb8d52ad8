"""``pynomaly-ops``: the project's command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pynomaly_ops import terminal

app = typer.Typer(no_args_is_help=True, help="Operate the Pynomaly API: platform, local stack, drills, load tests.")
console = terminal.console()
err_console = terminal.console(stderr=True)

StackOption = Annotated[str, typer.Option("--stack", "-s", help="Stack name: a file stacks/Pulumi.<stack>.yaml.")]


def _add_sub_commands() -> None:
    """The local stack's (local/cli.py), the drills' (drills/cli.py), the load tests' (loadtests/cli.py) and the
    policy pack's (pynomaly_cli/policy_check.py) sub-commands."""
    from drills.cli import app as drill_app
    from loadtests.cli import app as load_app
    from local.cli import app as local_app
    from pynomaly_cli.policy_check import app as policy_app

    app.add_typer(local_app, name="local")
    app.add_typer(drill_app, name="drill")
    app.add_typer(load_app, name="load")
    app.add_typer(policy_app, name="policy")


_add_sub_commands()


@app.callback()
def main() -> None:
    """Operate the Pynomaly API: platform, local stack, drills, load tests."""


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"[red]error:[/] {message}")
    raise typer.Exit(code)


@app.command()
def plan(stack: StackOption, as_json: Annotated[bool, typer.Option("--json", help="Print the raw record.")] = False):
    """Render what a stack declares, offline under Pulumi's mocks (no CLI, no credentials)."""
    from pynomaly_cli.offline import OfflineError, render
    from pynomaly_cli.plan import print_plan

    with console.status(f"Running the program for stack {stack} under mocks..."):
        try:
            rendering = render(stack)
        except OfflineError as exc:
            fail(str(exc))
    if as_json:
        print(
            json.dumps({"resources": [r.__dict__ for r in rendering.resources], "outputs": rendering.outputs}, indent=2)
        )
    else:
        print_plan(rendering, console)


@app.command("render-k8s")
def render_k8s(
    stack: StackOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the YAML files (its *.yaml are replaced).")],
    check: Annotated[
        bool, typer.Option("--check", help="Validate against the cluster version's schema and run checkov.")
    ] = False,
    config: Annotated[
        list[str] | None,
        typer.Option("--config", "-c", help="KEY=VALUE laid over the stack file, e.g. workload.active_color=green."),
    ] = None,
):
    """Write every Kubernetes object the stack declares as YAML, offline under Pulumi's mocks."""
    from pynomaly_cli import render_k8s as rk
    from pynomaly_cli.offline import OfflineError

    overrides = {}
    for item in config or []:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"--config {item!r}: expected KEY=VALUE, e.g. workload.active_color=green")
        overrides[key if ":" in key else f"pynomaly:{key}"] = value
    with console.status(f"Running the program for stack {stack} under mocks..."):
        try:
            paths, version = rk.render_stack(stack, out, overrides)
        except (OfflineError, rk.RenderError) as exc:
            fail(str(exc))
    console.print(f"Wrote {len(paths)} manifests to {out} (Kubernetes {version}).")
    if check:
        _check_k8s(rk, out, paths, version)


def _check_k8s(rk, out: Path, paths: list[Path], version: str) -> None:
    try:
        results = rk.validate_schema(paths, version)
        checkov = rk.find_checkov()
        if checkov is None:
            fail(f"checkov not found; install it in its own venv: {rk.CHECKOV_INSTALL} (or set {rk.CHECKOV_ENV})")
        skips = rk.load_skips()
        failures = rk.run_checkov(out, checkov, skips)
    except rk.RenderError as exc:
        fail(str(exc))
    for r in results:
        if r.skipped:
            console.print(f"[yellow]schema skipped[/] {r.file}: {r.skipped}")
        elif r.error:
            console.print(f"[red]schema error[/] {r.file}: {r.error}")
    for f in failures:
        console.print(f"[red]checkov failed[/] {f.check_id} {f.name}: {f.resource} ({f.file})")
    errors = [r for r in results if r.error]
    checked = sum(1 for r in results if not r.skipped)
    console.print(
        f"schema (Kubernetes {version}, strict): {checked - len(errors)}/{checked} valid; "
        f"checkov kubernetes: {len(failures)} failed, {len(skips)} check(s) skipped ({rk.CHECKOV_SKIPS_FILE.name})"
    )
    if errors or failures:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
