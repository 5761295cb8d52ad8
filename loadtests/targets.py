"""Where a load test goes: the local stack (default), a Pulumi stack's outputs, or a URL.

Every target is read as the same :class:`~pynomaly_ops.outputs.StackOutputs` shape the drills read. Load
goes to loopback addresses only unless ``PYNOMALY_LOAD_ALLOW_REMOTE=1`` says the operator means a remote
target (a real stack); this machine's rules forbid traffic elsewhere, so the tests never set it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from local.recorders import recorder_url
from pynomaly_ops import stack_outputs
from pynomaly_ops.naming import API_KEY_ENV
from pynomaly_ops.outputs import StackOutputs

LOCAL = "local"


class TargetError(ValueError):
    """The target cannot be reached or read (no local stack, no outputs, a non-loopback URL...)."""


@dataclass(frozen=True)
class Target:
    kind: str  # local | stack | url
    name: str  # the key of load.normal_rate_per_s: "local", the stack's name, or "default"
    url: str
    api_key: str | None
    outputs: StackOutputs | None = None
    state_dir: str | None = None  # the local stack's, for its capacity (instance count)

    def describe(self) -> str:
        return {"local": "the local stack", "stack": f"stack {self.name}", "url": "a URL"}[self.kind] + f" {self.url}"


def checked_url(url: str) -> str:
    try:
        return recorder_url(url.rstrip("/"))
    except ValueError as exc:
        raise TargetError(str(exc)) from None


def local(state_dir: str | Path | None = None) -> Target:
    from local.layout import state_dir_from
    from local.stack import running_stack

    root = state_dir_from(Path(state_dir) if state_dir else None)
    try:
        path = running_stack(root).layout.outputs_file
    except Exception as exc:  # the stack's own errors say what is missing
        raise TargetError(f"no local stack in {root}: {exc} (`pynomaly-ops local up` brings it up)") from None
    if not path.exists():
        raise TargetError(f"no outputs in {path}: `pynomaly-ops local up` writes them")
    outputs = StackOutputs.from_json_file(path)
    return Target(LOCAL, LOCAL, checked_url(outputs.load_balancer_url), outputs.api_key, outputs, str(root))


def stack(name: str, outputs_file: Path | None = None, api_key: str | None = None) -> Target:
    """A Pulumi stack: ``--outputs FILE`` (saved ``pulumi stack output --json``) or the Pulumi CLI."""
    try:
        outputs = stack_outputs.read(name, outputs_file, show_secrets=True)
    except stack_outputs.OutputsError as exc:
        raise TargetError(str(exc)) from None
    key = api_key or os.environ.get(API_KEY_ENV) or outputs.api_key
    return Target("stack", name, checked_url(outputs.load_balancer_url), key, outputs)


def url(address: str, api_key: str | None = None) -> Target:
    return Target("url", "default", checked_url(address), api_key or os.environ.get(API_KEY_ENV))


def instance_count(target: Target) -> int | None:
    """The capacity behind the target now: the local stack's instances in the load balancer that are UP.
    None where this tool cannot read it (see loadtests/README.md for AWS)."""
    if target.kind != LOCAL:
        return None
    from local.probes import instance_count as count

    return count(target.state_dir, status="UP")
