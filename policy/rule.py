"""How a rule is written once for both ways of running the pack.

A rule is a pulumi_policy policy. :func:`resource_rule` (:func:`typed_rule` for one check per type) wraps a
check of one resource's inputs into a ``ResourceValidationPolicy``: it runs as each resource is declared, before
`pulumi up` creates it. :func:`stack_rule` wraps a check of the whole stack, :func:`linked_rule` a check of each
resource of some types with the stack at hand (what it refers to, what refers to it), into a
``StackValidationPolicy``, which sees every resource's outputs and references. `pulumi preview --policy-pack
policy/` calls their ``validate``; so does `pynomaly-ops policy check` (policy/engine.py), with arguments built
from the offline rendering as the engine would build them.

Values a preview cannot know yet: the engine's arguments wrap every property in pulumi_policy's proxy, which
raises ``UnknownValueError`` when a check reads an unknown value. A resource rule lets it propagate: the SDK then
reports that the rule could not run on that resource during preview, not a violation. A stack rule checks its
subjects one by one (:func:`each`), so an unknown value skips only the subject it belongs to.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError

from policy.stack import StackContext, context

Props = Mapping[str, Any]


@dataclass(frozen=True)
class Problem:
    what: str  # what is wrong
    fix: str  # the setting that fixes it


@dataclass(frozen=True)
class Finding:
    """A problem of a stack rule, on a resource (or on the stack, for something missing: ``urn`` None)."""

    name: str
    urn: str | None
    problem: Problem


def message(name: str, problem: Problem) -> str:
    """What a violation says: the resource, what is wrong, the setting that fixes it."""
    return f"{name}: {problem.what}. Fix: {problem.fix}."


def subject(text: str) -> str:
    """The resource a violation's :func:`message` names (one that is missing has no URN to name it by)."""
    return text.split(": ", 1)[0]


def truthy(value: Any) -> bool:
    """A boolean input; some pulumi-aws properties are strings ("true"), such as a launch template's EBS flags."""
    return value is True or (isinstance(value, str) and value.lower() == "true")


def level(advisory: bool) -> EnforcementLevel:
    return EnforcementLevel.ADVISORY if advisory else EnforcementLevel.MANDATORY


ResourceCheck = Callable[[Props, StackContext], Iterable[Problem]]
StackCheck = Callable[["Stack", StackContext], Iterable[Finding]]
LinkedCheck = Callable[[PolicyResource, "Stack", StackContext], Iterable[Problem]]


def resource_rule(
    name: str, description: str, types: Collection[str], *, advisory: bool = False, production: bool = False
) -> Callable[[ResourceCheck], ResourceValidationPolicy]:
    """A decorator: the check becomes a rule on each resource of ``types`` (``production``: in a stack named prod)."""
    return lambda check: typed_rule(
        name, description, dict.fromkeys(types, check), advisory=advisory, production=production
    )


def typed_rule(
    name: str,
    description: str,
    checks: Mapping[str, ResourceCheck],
    *,
    advisory: bool = False,
    production: bool = False,
) -> ResourceValidationPolicy:
    """A rule checking each resource with the check of its type (resources of other types pass)."""

    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        check = checks.get(args.resource_type)
        if check is None:
            return
        ctx = context(args.urn)
        if production and not ctx.production:
            return
        for problem in check(args.props, ctx):
            report(message(args.name, problem), None)

    return ResourceValidationPolicy(name, description, validate, enforcement_level=level(advisory))


def stack_rule(
    name: str, description: str, *, advisory: bool = False, production: bool = False
) -> Callable[[StackCheck], StackValidationPolicy]:
    """A rule on the stack as a whole: what exists, and how resources refer to each other."""

    def make(check: StackCheck) -> StackValidationPolicy:
        def validate(args: StackValidationArgs, report: ReportViolation) -> None:
            if not args.resources:
                return
            ctx = context(args.resources[0].urn)
            if production and not ctx.production:
                return
            for finding in check(Stack(args.resources), ctx):
                report(message(finding.name, finding.problem), finding.urn)

        return StackValidationPolicy(name, description, validate, enforcement_level=level(advisory))

    return make


def linked_rule(
    name: str, description: str, types: Collection[str], *, advisory: bool = False, production: bool = False
) -> Callable[[LinkedCheck], StackValidationPolicy]:
    """A decorator: the check becomes a stack rule on each resource of ``types``, with the whole stack at hand to
    follow what the resource refers to, or what refers to it (a bucket's policy, an instance's parameter group)."""

    def make(check: LinkedCheck) -> StackValidationPolicy:
        def check_each(stack: Stack, ctx: StackContext) -> Iterator[Finding]:
            return each(stack.of_type(*types), lambda resource: check(resource, stack, ctx))

        return stack_rule(name, description, advisory=advisory, production=production)(check_each)

    return make


def each(subjects: Iterable[PolicyResource], check: Callable[[PolicyResource], Iterable[Problem]]) -> Iterator[Finding]:
    """``check`` on every subject; a subject whose needed values are unknown (preview) is skipped."""
    for subject in subjects:
        try:
            problems = list(check(subject))
        except UnknownValueError:
            continue
        for problem in problems:
            yield Finding(subject.name, subject.urn, problem)


class Stack:
    """The stack's resources, with the references between them the engine records (property dependencies)."""

    def __init__(self, resources: Sequence[PolicyResource]) -> None:
        self.resources = list(resources)

    def of_type(self, *types: str) -> list[PolicyResource]:
        return [r for r in self.resources if r.resource_type in types]

    def referencing(self, target: PolicyResource, resource_type: str, prop: str) -> list[PolicyResource]:
        """The resources of ``resource_type`` whose ``prop`` takes its value from ``target``."""
        return [r for r in self.of_type(resource_type) if target.urn in {d.urn for d in referenced(r, prop)}]


def referenced(resource: PolicyResource, prop: str, resource_type: str | None = None) -> list[PolicyResource]:
    """The resources ``prop`` of ``resource`` takes its value from (of ``resource_type`` only, if given)."""
    found = resource.property_dependencies.get(prop, [])
    return [d for d in found if resource_type is None or d.resource_type == resource_type]
