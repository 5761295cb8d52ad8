"""Read a Pulumi stack's outputs: a saved ``pulumi stack output --json``, or the Pulumi CLI.

The load tests (``load run --stack``) and the AWS fault library (aws_target/) read a stack the same way;
every error says what is missing and how to get it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from pydantic import ValidationError

from pynomaly_ops import REPO_ROOT
from pynomaly_ops.outputs import StackOutputs

CLI_TIMEOUT_S = 120


class OutputsError(ValueError):
    """No outputs could be read; the message names what is missing and how to fix it."""


def _saved(name: str) -> str:
    return f"`pulumi stack output --json --stack {name} > outputs.json` and pass --outputs outputs.json"


def _validated(data: object, where: str) -> StackOutputs:
    try:
        return StackOutputs.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'the document'}: {e['msg']}" for e in exc.errors())
        raise OutputsError(f"{where}: not a stack's outputs: {problems}") from None


def from_file(path: Path | str) -> StackOutputs:
    """A saved ``pulumi stack output --json``."""
    path = Path(path)
    if not path.exists():
        raise OutputsError(f"no outputs file {path}: save a stack's with {_saved('NAME')}")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise OutputsError(f"{path}: not a stack's outputs: {exc}") from None
    return _validated(data, str(path))


def from_cli(name: str, show_secrets: bool = False) -> StackOutputs:
    """``pulumi stack output --json --stack NAME``, run in the project's directory (where Pulumi.yaml is)."""
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        raise OutputsError(f"no Pulumi CLI to read stack {name}'s outputs: install it or save them with {_saved(name)}")
    command = [pulumi, "stack", "output", "--json", "--stack", name, *(["--show-secrets"] if show_secrets else [])]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise OutputsError(f"pulumi stack output --stack {name} failed: {done.stderr.strip()}")
    try:
        data = json.loads(done.stdout)
    except ValueError as exc:
        raise OutputsError(f"pulumi stack output --stack {name} printed no JSON: {exc}") from None
    return _validated(data, f"stack {name} (was it deployed?)")


def read(name: str, outputs_file: Path | str | None = None, show_secrets: bool = False) -> StackOutputs:
    """Stack ``name``'s outputs: from ``outputs_file`` when given, else from the Pulumi CLI."""
    return from_file(outputs_file) if outputs_file is not None else from_cli(name, show_secrets)
