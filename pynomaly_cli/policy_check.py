"""``pynomaly-ops policy check``: the policy pack (policy/) over a stack's offline rendering.

No Pulumi CLI, no credentials: the program runs under mocks (pynomaly_cli/offline.py) and the pack's own
policies judge what it declared, through policy/engine.py, which hands them the arguments the Pulumi engine
would. Exit 0 when no mandatory rule is violated, 1 otherwise, 2 for a usage error (an unknown stack).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.markup import escape
from rich.table import Table

from pynomaly_cli.offline import OfflineError, Rendering, offline_config, render, unwrap_secrets
from pynomaly_cli.plan import print_offline_notice
from pynomaly_ops import terminal
from pynomaly_ops.baselines import Baselines
from pynomaly_ops.settings import SettingsError

if TYPE_CHECKING:
    from policy.engine import Outcome, Record

app = typer.Typer(no_args_is_help=True, help="The CrossGuard policy pack (policy/), run offline.")
console = terminal.console()
err_console = terminal.console(stderr=True)
USAGE = 2


def records(rendering: Rendering) -> list[Record]:
    """The rendering's resources as the engine hands them to a policy pack (secrets unwrapped)."""
    from policy.engine import Record

    return [
        Record(
            urn=r.urn,
            type=r.type,
            name=r.name,
            inputs=r.plain_inputs,
            outputs=unwrap_secrets(r.state),
            parent=r.parent,
            dependencies=r.dependencies,
            property_dependencies=r.property_dependencies,
            ignore_changes=r.ignore_changes,
        )
        for r in rendering.resources
    ]


def check(rendering: Rendering, overrides: dict[str, Any] | None = None, numbers: Baselines | None = None) -> Outcome:
    """The pack over ``rendering``, with the configuration (and numbers file) the program was rendered with."""
    from policy.engine import run

    config, _, _ = offline_config(rendering.stack, overrides)
    return run(records(rendering), config, numbers)


def _usage(message: str) -> NoReturn:
    err_console.print(f"[red]error:[/] {message}")
    raise typer.Exit(USAGE)


def _table(outcome: Outcome) -> Table:
    table = Table(title="Policy violations, by rule and resource")
    for column in ("level", "rule", "resource", "what is wrong, and the fix"):
        table.add_column(column, overflow="fold")
    order = sorted(outcome.violations, key=lambda v: (v.level != "mandatory", v.rule, v.resource))
    for v in order:
        colour = "red" if v.level == "mandatory" else "yellow"
        what = v.message.removeprefix(f"{v.resource}: ")
        table.add_row(f"[{colour}]{v.level}[/]", v.rule, escape(v.resource), escape(what))
    return table


def _summary(rendering: Rendering, outcome: Outcome) -> str:
    from policy.pack import POLICIES

    verdict = "[red]FAIL[/]" if outcome.mandatory else "[green]PASS[/]"
    return (
        f"{verdict} stack {rendering.stack}: {len(outcome.mandatory)} mandatory and {len(outcome.advisory)} advisory "
        f"violation(s); {len(POLICIES)} rules over {len(rendering.resources)} resources"
    )


@app.command("check")
def check_command(
    stack: Annotated[str, typer.Option("--stack", "-s", help="Stack name: a file stacks/Pulumi.<stack>.yaml.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the violations as JSON.")] = False,
) -> None:
    """Run the policy pack over a stack's offline rendering; exit 1 if a mandatory rule is violated."""
    try:
        import policy.engine  # noqa: F401  (pulumi-policy: the `policy` extra)
    except ModuleNotFoundError as exc:
        _usage(f"the policy pack needs {exc.name!r}: pip install -e '.[platform,policy]'")
    with err_console.status(f"Running the program for stack {stack} under mocks..."):
        try:
            rendering = render(stack)
            outcome = check(rendering)
        except (OfflineError, SettingsError) as exc:
            _usage(str(exc))
    if as_json:
        report = {
            "stack": stack,
            "mandatory": len(outcome.mandatory),
            "advisory": len(outcome.advisory),
            "violations": [asdict(v) for v in outcome.violations],
            "not_run": outcome.not_run,
        }
        print(json.dumps(report, indent=2))
    else:
        print_offline_notice(rendering, console)
        if outcome.violations:
            console.print(_table(outcome))
        for line in outcome.not_run:
            console.print(f"[yellow]not run:[/] {escape(line)}")
        console.print(_summary(rendering, outcome))
    if outcome.mandatory:
        raise typer.Exit(1)
