"""``pynomaly-ops``: the project's command line."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True, help="Operate the Pynomaly API: platform, local stack, drills, load tests.")
console = Console()
err_console = Console(stderr=True)

StackOption = Annotated[str, typer.Option("--stack", "-s", help="Stack name: a file stacks/Pulumi.<stack>.yaml.")]


def _add_local() -> None:
    """The local stack's sub-commands (local/cli.py)."""
    from local.cli import app as local_app

    app.add_typer(local_app, name="local")


_add_local()


@app.callback()
def main() -> None:
    """Operate the Pynomaly API: platform, local stack, drills, load tests."""


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"[red]error:[/] {message}")
    raise typer.Exit(code)


@app.command()
def plan(stack: StackOption, as_json: Annotated[bool, typer.Option("--json", help="Print the raw record.")] = False):
    """Render what a stack declares, offline under Pulumi's mocks (no CLI, no credentials)."""
    from pynomaly_ops.offline import OfflineError, render
    from pynomaly_ops.plan import print_plan

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


if __name__ == "__main__":
    app()
