"""Helpers for the policy pack's tests: resources as the engine hands them over, and renderings to change."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from pulumi_policy import Policy

from policy.engine import Outcome, Record, run
from policy.stack import stack_of
from pynomaly_cli.offline import Rendering, offline_config
from pynomaly_cli.policy_check import check
from pynomaly_ops import settings
from pynomaly_ops.baselines import Baselines

STACKS = sorted(p.stem.removeprefix("Pulumi.") for p in settings.STACKS_DIR.glob("Pulumi.*.yaml"))
# dev with the EKS API's public endpoint on, for one runner's address (a first deploy's way in).
PUBLIC_ENDPOINT = {"pynomaly:cluster.public_access_cidrs": ["203.0.113.7/32"], "pynomaly:cluster.runner_in_vpc": False}


def urn(resource_type: str, name: str, stack: str = "prod") -> str:
    return f"urn:pulumi:{stack}::pynomaly::{resource_type}::{name}"


def rec(
    resource_type: str,
    name: str,
    props: Mapping[str, Any] | None = None,
    refs: Mapping[str, Sequence[Record]] | None = None,
    stack: str = "prod",
) -> Record:
    """A resource whose inputs and outputs are ``props`` and whose properties ``refs`` take values from others."""
    props = dict(props or {})
    deps = {key: [r.urn for r in records] for key, records in (refs or {}).items()}
    return Record(urn(resource_type, name, stack), resource_type, name, props, props, property_dependencies=deps)


def judge(rule: Policy, *records: Record, numbers: Baselines | None = None) -> Outcome:
    """``rule`` over ``records`` (one stack's), as `policy check` runs the pack."""
    config, _, _ = offline_config(stack_of(records[0].urn))
    return run(records, config, numbers, policies=[rule])


def found(outcome: Outcome) -> list[tuple[str, str]]:
    """``[(rule, resource)]`` of the violations, sorted."""
    return sorted((v.rule, v.resource) for v in outcome.violations)


# --- changes to a rendering: what a change to the program would declare ---------------------------------


def changed(r: Rendering, name: str, **props: Any) -> Rendering:
    """``r`` with the properties of the resource ``name`` (inputs and outputs) set to ``props``."""
    target = r.named(name)
    edited = dataclasses.replace(target, inputs={**target.inputs, **props}, state={**target.state, **props})
    return dataclasses.replace(r, resources=[edited if x is target else x for x in r.resources])


def without(r: Rendering, name: str) -> Rendering:
    """``r`` with no resource named ``name``."""
    r.named(name)  # exactly one
    return dataclasses.replace(r, resources=[x for x in r.resources if x.name != name])


def mandatory(r: Rendering, overrides: dict[str, Any] | None = None, numbers: Baselines | None = None) -> list:
    """``[(rule, resource)]`` of the mandatory violations the pack finds in ``r``."""
    return found(Outcome(check(r, overrides, numbers).mandatory))
