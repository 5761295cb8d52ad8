"""Helpers for the platform tests (reading a Rendering)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from infra import settings as stack_settings
from pynomaly_ops import baselines
from pynomaly_ops.offline import Rendering, Resource, render

ONCALL = ["oncall@example.com", "sre-lead@example.com"]  # alarm e-mails in a test variant
STACKS = sorted(p.stem.removeprefix("Pulumi.") for p in stack_settings.STACKS_DIR.glob("Pulumi.*.yaml"))


@cache
def rendered(stack: str) -> Rendering:
    """Each stack runs once per test session."""
    return render(stack)


def one(r: Rendering, type_token: str, name: str | None = None) -> Resource:
    found = [x for x in r.of_type(type_token) if name is None or x.name == name]
    assert len(found) == 1, f"expected one {type_token} {name or ''}, found {[x.name for x in found]}"
    return found[0]


def inputs(r: Rendering, name: str) -> dict[str, Any]:
    return r.named(name).plain_inputs


def state(r: Rendering, name: str) -> dict[str, Any]:
    return r.named(name).state


def rid(name: str) -> str:
    """The id the mocks give a resource: what other resources' inputs hold."""
    return f"{name}-id"


def policy(resource_inputs: dict[str, Any], key: str = "policy") -> dict[str, Any]:
    return json.loads(resource_inputs[key])


def statements(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc["Statement"]


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def write_baselines(tmp_path: Path, change) -> Path:
    """A copy of baselines.yaml with ``change(data)`` applied."""
    data = yaml.safe_load(baselines.DEFAULT_PATH.read_text())
    change(data)
    path = tmp_path / "baselines.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
