"""What the Pulumi engine does with the pack, done without it: `pynomaly-ops policy check`.

`pulumi preview --policy-pack policy/` asks the pack to ``Analyze`` each resource (its inputs) and to
``AnalyzeStack`` once (every resource with its outputs, parent, dependencies and property dependencies);
pulumi_policy turns each request into a ``ResourceValidationArgs`` or ``StackValidationArgs``, wraps every
property in its unknown-checking proxy and calls the policies' ``validate``. :func:`run` builds the same
arguments from :class:`Record` s (the offline rendering's resources) and calls the same policies, so both
runners go through one set of rule functions. Only the values differ: a preview has unknowns, the offline
rendering's mocks make every value up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError, unknown_checking_proxy

from policy import stack
from policy.pack import POLICIES
from policy.rule import subject
from pynomaly_ops.baselines import Baselines

STACK = "(stack)"  # where a stack rule's violation names no resource


@dataclass(frozen=True)
class Record:
    """A resource as the engine knows it (property names as the engine spells them, secrets unwrapped)."""

    urn: str
    type: str
    name: str
    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any]
    parent: str | None = None
    dependencies: Sequence[str] = ()
    property_dependencies: Mapping[str, Sequence[str]] = field(default_factory=dict)
    ignore_changes: Sequence[str] = ()


@dataclass(frozen=True)
class Violation:
    rule: str
    level: str  # "mandatory" or "advisory"
    resource: str
    urn: str | None
    message: str


@dataclass
class Outcome:
    violations: list[Violation] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)  # "<rule> on <resource>: <why>" (unknown values, in preview)

    @property
    def mandatory(self) -> list[Violation]:
        return [v for v in self.violations if v.level == EnforcementLevel.MANDATORY.value]

    @property
    def advisory(self) -> list[Violation]:
        return [v for v in self.violations if v.level != EnforcementLevel.MANDATORY.value]


def run(
    records: Sequence[Record],
    config: Mapping[str, Any],
    numbers: Baselines | None = None,
    policies: Iterable[Policy] = POLICIES,
) -> Outcome:
    """Every policy over ``records`` of one stack, whose configuration was ``config`` (``namespace:key``)."""
    outcome = Outcome()
    if not records:
        return outcome
    stack.provide(stack.stack_of(records[0].urn), config, numbers)
    names = {r.urn: r.name for r in records}
    for policy in policies:
        if isinstance(policy, ResourceValidationPolicy):
            for record in records:
                _call(policy, _resource_args(record), outcome, names, record.urn)
        elif isinstance(policy, StackValidationPolicy):
            _call(policy, StackValidationArgs(_stack_resources(records)), outcome, names, None)
    return outcome


def _call(
    policy: ResourceValidationPolicy | StackValidationPolicy,
    args: Any,
    outcome: Outcome,
    names: dict[str, str],
    urn: str | None,
) -> None:
    level = (policy.enforcement_level or EnforcementLevel.MANDATORY).value

    def report(message: str, reported: str | None = None) -> None:
        at = urn or reported
        resource = names.get(at or "") or subject(message)
        outcome.violations.append(Violation(policy.name, level, resource, at, message))

    try:
        result = policy.validate(args, report)
        assert result is None, f"{policy.name}: the pack's rules are synchronous"
    except UnknownValueError as exc:
        outcome.not_run.append(f"{policy.name} on {names.get(urn or '', STACK)}: {exc.message}")


def _options(record: Record) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=False,
        ignore_changes=list(record.ignore_changes),
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
        parent=record.parent,
    )


def _resource_args(record: Record) -> ResourceValidationArgs:
    props = unknown_checking_proxy(dict(record.inputs))
    return ResourceValidationArgs(record.type, props, record.urn, record.name, _options(record), None)


def _stack_resources(records: Sequence[Record]) -> list[PolicyResource]:
    """Every resource with its outputs, and its parent and dependencies as resources (as pulumi_policy does)."""
    by_urn = {
        r.urn: PolicyResource(
            r.type, unknown_checking_proxy(dict(r.outputs)), r.urn, r.name, _options(r), None, None, [], {}
        )
        for r in records
    }
    for r in records:
        resource = by_urn[r.urn]
        resource.parent = by_urn.get(r.parent or "")
        resource.dependencies = [by_urn[u] for u in r.dependencies if u in by_urn]
        resource.property_dependencies = {
            key: [by_urn[u] for u in urns if u in by_urn] for key, urns in r.property_dependencies.items()
        }
    return list(by_urn.values())
