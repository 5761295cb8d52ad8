"""Observability: the alarm catalogue in CloudWatch, alarms that notify, the load balancer's access logs."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

from pulumi_policy import PolicyResource
from pulumi_policy.proxy import UnknownValueError

from policy.resource_types import COMPOSITE_ALARM, LOAD_BALANCER, METRIC_ALARM, RDS_INSTANCE
from policy.rule import Finding, Problem, Props, Stack, each, referenced, resource_rule, stack_rule, truthy
from policy.stack import StackContext
from pynomaly_ops.alarms import Alarm, Target, catalogue, for_target

DIRECTIONS = {">": "GreaterThan", "<": "LessThan"}  # the start of CloudWatch's comparison operators
FLIPPED = {">": "<", "<": ">"}
GIB = 1024**3
SOURCE = "infra/alarms.py declares it from the catalogue (pynomaly_ops/alarms.py) and baselines.yaml"

Convert = Callable[[float, PolicyResource, Stack, StackContext], float]


@dataclass(frozen=True)
class Unit:
    """CloudWatch's unit for a signal whose metric is not in the numbers file's unit.

    infra/alarms.py converts; the pack states the units itself so that it checks the program's result rather
    than repeating its arithmetic.
    """

    convert: Convert
    inverse: bool = False  # the metric falls as the watched figure rises (free bytes for a used share)


def _watched_storage_gib(alarm: PolicyResource, stack: Stack) -> float:
    """The allocated storage of the RDS instance an alarm watches (a replica starts at its source's size)."""
    ident = (alarm.props.get("dimensions") or {}).get("DBInstanceIdentifier")
    for instance in stack.of_type(RDS_INSTANCE):
        if instance.props.get("identifier") == ident:
            sources = referenced(instance, "replicateSourceDb", RDS_INSTANCE)
            size = instance.props.get("allocatedStorage") or (sources and sources[0].props.get("allocatedStorage"))
            if not size:
                raise LookupError(f"the allocated storage of {ident} is not known")
            return float(size)
    raise LookupError(f"it watches {ident}, which is not an RDS instance of the stack")


def _free_bytes(used_percent: float, alarm: PolicyResource, stack: Stack, ctx: StackContext) -> float:
    return _watched_storage_gib(alarm, stack) * GIB * (100 - used_percent) / 100


def _connections(percent: float, alarm: PolicyResource, stack: Stack, ctx: StackContext) -> float:
    return ctx.numbers.database.max_connections * percent / 100


UNITS = {
    "response_time_p95": Unit(lambda ms, *_: ms / 1000),  # TargetResponseTime is in seconds
    "db_connections": Unit(_connections),  # a share of database.max_connections, as a count
    "db_replica_connections": Unit(_connections),
    "db_free_storage": Unit(_free_bytes, inverse=True),  # a used share of the storage, as free bytes
    "db_replica_free_storage": Unit(_free_bytes, inverse=True),
}


def _is_sns(arn: str) -> bool:
    return arn.split(":")[2:3] == ["sns"]


def _threshold(entry: Alarm, alarm: PolicyResource, stack: Stack, ctx: StackContext) -> Iterator[Problem]:
    unit = UNITS.get(entry.signal.name)
    try:
        expected = unit.convert(entry.threshold, alarm, stack, ctx) if unit else entry.threshold
    except LookupError as exc:
        yield Problem(f"cannot tell its threshold's unit: {exc}", SOURCE)
        return
    actual = alarm.props.get("threshold")
    if actual is None or not math.isclose(actual, expected, rel_tol=1e-9):
        in_unit = f" ({expected:g} in the metric's unit)" if unit else ""
        yield Problem(
            f"threshold {actual} is not the catalogue's {entry.threshold:g}{in_unit} from {entry.baseline}",
            f"threshold from baselines.yaml {entry.baseline}: {SOURCE}",
        )
    comparison = FLIPPED[entry.comparison] if unit and unit.inverse else entry.comparison
    operator = str(alarm.props.get("comparisonOperator"))
    if not operator.startswith(DIRECTIONS[comparison]):
        yield Problem(
            f"compares {operator}, the catalogue's {entry.key} fires when the figure is {entry.comparison} threshold",
            f"comparison_operator={DIRECTIONS[comparison]}Threshold: {SOURCE}",
        )


def _notifies_sns(alarm: PolicyResource) -> Iterator[Problem]:
    actions = list(alarm.props.get("alarmActions") or [])
    if not actions or not all(_is_sns(a) for a in actions):
        yield Problem("does not notify an SNS topic", "alarm_actions=[<the SNS topic of its severity>.arn]")


def _matches(entry: Alarm, stack: Stack, ctx: StackContext, alarm: PolicyResource) -> list[Problem]:
    return [*_threshold(entry, alarm, stack, ctx), *_notifies_sns(alarm)]


def _names(alarms: list[PolicyResource]) -> dict[str, PolicyResource]:
    """Alarms by their CloudWatch name (a name not known yet, in preview, leaves its alarm out)."""
    named = {}
    for alarm in alarms:
        try:
            named[str(alarm.props.get("name"))] = alarm
        except UnknownValueError:
            continue
    return named


@stack_rule(
    "alarm-catalogue",
    "Every CloudWatch entry of the alarm catalogue exists, with its threshold from baselines.yaml and an SNS action",
)
def alarm_catalogue(stack: Stack, ctx: StackContext) -> Iterator[Finding]:
    alarms = _names(stack.of_type(METRIC_ALARM))
    replica = any(referenced(r, "replicateSourceDb", RDS_INSTANCE) for r in stack.of_type(RDS_INSTANCE))
    for entry in for_target(catalogue(ctx.numbers, db_replica=replica), Target.CLOUDWATCH):
        name = entry.name(Target.CLOUDWATCH, ctx.stack)
        alarm = alarms.get(name)
        if alarm is None:
            missing = Problem(f"the catalogue's {entry.key} ({entry.baseline}) has no CloudWatch alarm", SOURCE)
            yield Finding(name, None, missing)
            continue
        yield from each([alarm], partial(_matches, entry, stack, ctx))


@resource_rule("alarm-actions", "Every CloudWatch alarm notifies someone", [METRIC_ALARM, COMPOSITE_ALARM])
def alarm_actions(props: Props, ctx: StackContext) -> Iterator[Problem]:
    enabled = props.get("actionsEnabled")
    if not props.get("alarmActions") or (enabled is not None and not truthy(enabled)):
        yield Problem(
            "fires without notifying anyone (no alarm action, or actions disabled)",
            "alarm_actions=[<an SNS topic's ARN>] and actions_enabled left on",
        )


@resource_rule("alb-access-logs", "Application load balancers write access logs", [LOAD_BALANCER])
def alb_access_logs(props: Props, ctx: StackContext) -> Iterator[Problem]:
    if props.get("loadBalancerType", "application") != "application":
        return
    logs = props.get("accessLogs") or {}
    if not truthy(logs.get("enabled")) or not logs.get("bucket"):
        yield Problem(
            "access logs are off: requests leave no trace to investigate",
            "access_logs={'enabled': True, 'bucket': <the access-log bucket>, 'prefix': ...} (infra/load_balancer.py)",
        )
