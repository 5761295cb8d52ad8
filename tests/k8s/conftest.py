"""Fixtures: the real program rendered offline (Pulumi mocks) per stack, and its Kubernetes manifests.

Each distinct (stack, config overrides) pair is rendered once per session; a
rendering takes a few seconds (a child process runs infra/ like the language host).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from pynomaly_cli.offline import PLACEHOLDERS, Rendering, render
from pynomaly_cli.render_k8s import manifests
from pynomaly_ops.settings import STACKS_DIR, StackSettings, from_stack_file

STACKS = sorted(p.stem.removeprefix("Pulumi.") for p in STACKS_DIR.glob("Pulumi.*.yaml"))

# One rendering of prod with everything non-default the tests need at once.
VARIANT = {
    "workload.active_color": "green",
    "workload.idle_replicas": "2",
    "workload.prometheus_operator": "true",
    "loadgen.enabled": "true",
    "loadgen.workers": "3",
    "cluster.node_max": "7",  # room for the idle colour and the load generators (infra/node_capacity.py)
    "cluster.public_access_cidrs": '["203.0.113.0/24"]',
    "cluster.admin_role_arns": json.dumps(
        ["arn:aws:iam::123456789012:role/platform-admin", "arn:aws:iam::123456789012:role/sre"]
    ),
}


@dataclass
class Stack:
    """A rendering with its manifests and the settings it was rendered from."""

    rendering: Rendering
    objects: list[dict[str, Any]]
    settings: StackSettings

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.objects if m["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [m for m in self.all(kind) if m["metadata"]["name"] == name]
        assert len(found) == 1, f"{len(found)} {kind} named {name}: {[m['metadata']['name'] for m in self.all(kind)]}"
        return found[0]

    def aws(self, type_token: str) -> list[dict[str, Any]]:
        return [r.plain_inputs for r in self.rendering.of_type(type_token)]


@pytest.fixture(scope="session")
def stack_render():
    cache: dict[tuple, Stack] = {}

    def get(stack: str, config: dict[str, str] | None = None) -> Stack:
        config = config or {}
        key = (stack, tuple(sorted(config.items())))
        if key not in cache:
            overrides = {f"pynomaly:{k}": v for k, v in config.items()}
            rendering = render(stack, overrides)
            settings = from_stack_file(stack, {**PLACEHOLDERS, **overrides})
            cache[key] = Stack(rendering, manifests(rendering), settings)
        return cache[key]

    return get


@pytest.fixture(params=STACKS)
def each_stack(request, stack_render) -> Stack:
    return stack_render(request.param)


@pytest.fixture
def prod(stack_render) -> Stack:
    return stack_render("prod")


@pytest.fixture
def variant(stack_render) -> Stack:
    return stack_render("prod", VARIANT)
