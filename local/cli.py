"""``pynomaly-ops local ...``: the local stack's commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from local.layout import STATE_ENV, Layout, LayoutError, state_dir_from
from local.stack import StackError, open_stack
from local.waiting import Timeout
from pynomaly_ops import terminal

app = typer.Typer(no_args_is_help=True, help="The production topology on this machine, from real servers.")
console = terminal.console()
err_console = terminal.console(stderr=True)

StateOption = Annotated[
    Path | None,
    typer.Option("--state-dir", envvar=STATE_ENV, help="Where the stack keeps its state (default .local-stack/)."),
]


def _fail(exc: Exception) -> None:
    err_console.print(f"[red]error:[/] {exc}")
    raise typer.Exit(1)


def _say(message: str) -> None:
    err_console.print(f"[green]✓[/] {message}")


def _open(state_dir: Path | None, create: bool = False, zoned: bool | None = None):
    try:
        return open_stack(state_dir_from(state_dir), _say, create=create, zoned=zoned)
    except (StackError, LayoutError) as exc:
        _fail(exc)


@app.command()
def up(
    state_dir: StateOption = None,
    zones: Annotated[
        bool,
        typer.Option(
            "--zones",
            help="Each zone in its own network namespace (root only): what the AZ drills need. A stack keeps the"
            " shape it was made with.",
        ),
    ] = False,
) -> None:
    """Start every piece (idempotent) and wait until all are healthy."""
    stack = _open(state_dir, create=True, zoned=True if zones else None)
    try:
        with err_console.status("bringing the local stack up..."):
            seconds = stack.up()
    except (StackError, Timeout, LayoutError) as exc:
        _fail(exc)
    _say(f"local stack up in {seconds:.1f}s: {stack.layout.outputs_file}")


@app.command()
def status(
    state_dir: StateOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every process, its address, state and health."""
    rows = _open(state_dir).status()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    zoned = any(r["link"] != "-" for r in rows)
    table = Table("name", "zone", *(["link"] if zoned else []), "address", "state", "pid", "health", "role")
    for r in rows:
        mark = "[green]ok[/]" if r["healthy"] else "[red]failing[/]"
        link = [r["link"]] if zoned else []
        table.add_row(r["name"], r["zone"], *link, r["address"], r["state"], str(r["pid"] or "-"), mark, r["role"])
    console.print(table)
    if zoned:
        links = {r["zone"]: r["link"] for r in rows if r["zone"] != "-"}
        console.print("zones: " + ", ".join(f"{z} {state}" for z, state in sorted(links.items())))
    if not all(r["healthy"] for r in rows):
        raise typer.Exit(1)


@app.command()
def down(
    state_dir: StateOption = None,
    purge: Annotated[bool, typer.Option("--purge", help="Also delete data (databases, Redis, Prometheus).")] = False,
) -> None:
    """Stop every process (verified by pid and by port)."""
    directory = state_dir_from(state_dir)
    if Layout.load(directory) is None:
        _say(f"no local stack in {directory}: nothing to stop")
        return
    try:
        _open(state_dir).down(purge=purge)
    except (StackError, Timeout) as exc:
        _fail(exc)
    _say("local stack down")


@app.command()
def outputs(
    state_dir: StateOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (the only format).")] = True,
    show_secrets: Annotated[
        bool, typer.Option("--show-secrets", help="Print the API key and the DSN's password (masked otherwise).")
    ] = False,
) -> None:
    """The stack outputs: the same keys as `pulumi stack output --json`, plus local-only ones; secrets masked
    unless --show-secrets (as `pulumi stack output` does without --show-secrets)."""
    wiring = _open(state_dir).wiring
    print(json.dumps(wiring.outputs() if show_secrets else wiring.masked_outputs(), indent=2))


@app.command()
def scale(
    count: Annotated[int, typer.Argument(help="Number of API instances.")], state_dir: StateOption = None
) -> None:
    """Change the number of API instances without dropping traffic."""
    stack = _open(state_dir)
    try:
        stack.scale(count)
    except (StackError, Timeout) as exc:
        _fail(exc)


@app.command()
def maintenance(
    switch: Annotated[
        str, typer.Argument(help="on: the load balancer answers with the maintenance page; off: normal.")
    ],
    state_dir: StateOption = None,
) -> None:
    """002 "Redirect traffic to maintenance page", on the local load balancer (no restart, no reload)."""
    from local import faults

    if switch not in ("on", "off"):
        _fail(ValueError(f"maintenance takes on or off, not {switch!r}"))
    _open(state_dir)  # a clear error when the stack is not there
    try:
        (faults.maintenance_on if switch == "on" else faults.maintenance_off)(str(state_dir_from(state_dir)))
    except (StackError, OSError) as exc:
        _fail(exc)
    _say(f"maintenance {switch}")


@app.command()
def backup(state_dir: StateOption = None) -> None:
    """A base backup of the database, an encrypted backup of the configuration, and the backups bucket copied
    to the off-site vault: what `rebuild` needs after the stack is lost (docs/disaster-recovery.md)."""
    from local import config_backup, pitr, vault
    from local.recovery import RecoveryError

    directory = str(state_dir_from(state_dir))
    _open(state_dir)  # a clear error when the stack is not there
    try:
        with err_console.status("base backup of the primary..."):
            _say(f"base backup {pitr.base_backup(directory)['backup_id']}")
        _say(f"configuration backed up to {config_backup.config_backup(directory)['key']}")
        with err_console.status("copying the backups bucket to the vault..."):
            copied = vault.replicate_backups(directory)
    except (StackError, RecoveryError) as exc:
        _fail(exc)
    _say(f"{copied['objects_copied']} new object(s) copied to {copied['vault']} ({copied['objects']} in all)")


@app.command()
def rebuild(state_dir: StateOption = None) -> None:
    """001 Disaster Recovery: rebuild a lost stack from the off-site vault alone (configuration, database to
    its last archived WAL, service) and smoke-test it. Refuses a state directory that holds a stack."""
    import time

    from local import disaster
    from local.recovery import RecoveryError

    try:
        with err_console.status("rebuilding from the vault (configuration, base backup, WAL replay)..."):
            result = disaster.rebuild_from_backups(time.time(), str(state_dir_from(state_dir)))
    except (StackError, Timeout, RecoveryError) as exc:
        _fail(exc)
    if result["figures"]["smoke tests failed"]:
        _fail(RuntimeError("rebuilt, but the smoke test failed: see `pynomaly-ops local status` and the logs"))
    _say(f"rebuilt from base backup {result['backup_id']} in {result['seconds']:.1f}s; the smoke test passes")
