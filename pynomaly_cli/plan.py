"""``pynomaly-ops plan``: what a stack declares, as a tree, an alarm table and its FIS experiment templates."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from pynomaly_cli.offline import Rendering, Resource
from pynomaly_ops.settings import FIS_DRILLS

METRIC_ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
COMPOSITE_ALARM = "aws:cloudwatch/compositeAlarm:CompositeAlarm"
FIS_TEMPLATE = "aws:fis/experimentTemplate:ExperimentTemplate"
SCHEDULE = "aws:scheduler/schedule:Schedule"
FIS_COLUMNS = ("drill", "action", "target", "stop conditions", "schedule")
SEVERITY_ORDER = {"critical": 0, "warning": 1}
COMPARISONS = {
    "GreaterThanThreshold": ">",
    "GreaterThanOrEqualToThreshold": ">=",
    "LessThanThreshold": "<",
    "LessThanOrEqualToThreshold": "<=",
}

# Inputs worth showing per resource type; everything else stays in `--json`.
# A dotted key reads a nested input (metadataOptions.httpTokens).
KEY_SETTINGS: dict[str, tuple[str, ...]] = {
    "aws:ec2/vpc:Vpc": ("cidrBlock",),
    "aws:ec2/subnet:Subnet": ("cidrBlock", "availabilityZone"),
    "aws:ec2/natGateway:NatGateway": ("subnetId",),
    "aws:ec2/flowLog:FlowLog": ("trafficType",),
    "aws:ec2/vpcEndpoint:VpcEndpoint": ("serviceName",),
    "aws:lb/loadBalancer:LoadBalancer": ("internal", "enableDeletionProtection", "dropInvalidHeaderFields"),
    "aws:lb/listener:Listener": ("port", "protocol", "sslPolicy"),
    "aws:lb/targetGroup:TargetGroup": ("port", "protocol", "healthCheck.path"),
    "aws:autoscaling/group:Group": ("minSize", "desiredCapacity", "maxSize", "healthCheckType"),
    "aws:autoscaling/policy:Policy": ("targetTrackingConfiguration.targetValue",),
    "aws:ec2/launchTemplate:LaunchTemplate": (
        "imageId",
        "instanceType",
        "metadataOptions.httpTokens",
        "metadataOptions.httpPutResponseHopLimit",
    ),
    "aws:rds/instance:Instance": (
        "instanceClass",
        "engineVersion",
        "multiAz",
        "backupRetentionPeriod",
        "deletionProtection",
        "replicateSourceDb",
    ),
    "aws:elasticache/replicationGroup:ReplicationGroup": (
        "nodeType",
        "numCacheClusters",
        "automaticFailoverEnabled",
        "multiAzEnabled",
    ),
    "aws:sqs/queue:Queue": ("name", "visibilityTimeoutSeconds"),
    "aws:s3/bucket:Bucket": ("bucket",),
    "aws:kms/key:Key": ("enableKeyRotation",),
    "aws:backup/plan:Plan": ("name",),
    "aws:cloudwatch/metricAlarm:MetricAlarm": ("threshold", "tags.Severity"),
    "aws:eks/cluster:Cluster": ("version",),
    "aws:eks/nodeGroup:NodeGroup": ("instanceTypes", "scalingConfig"),
}


def _number(value: Any) -> Any:
    """The engine hands every number over as a float; show whole ones as integers."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _short(value: Any) -> str:
    text = str(_number(value))
    return text if len(text) <= 60 else text[:57] + "..."


def _lookup(inputs: dict[str, Any], dotted: str) -> Any:
    value: Any = inputs
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def short_type(type_token: str) -> str:
    """``aws:s3/bucket:Bucket`` -> ``aws s3.Bucket``; components stay as they are."""
    package, _, rest = type_token.partition(":")
    module, _, name = rest.partition(":")
    if not name:
        return type_token
    return f"{package} {module.split('/')[0]}.{name}"


def _label(resource: Resource) -> str:
    label = f"[bold]{escape(resource.name)}[/] [dim]{escape(short_type(resource.type))}[/]"
    shown = []
    for key in KEY_SETTINGS.get(resource.type, ()):
        value = _lookup(resource.plain_inputs, key)
        if value is not None:
            shown.append(f"{key.rsplit('.', 1)[-1]}={escape(_short(value))}")
    return label + (f"  {' '.join(shown)}" if shown else "")


def resource_tree(rendering: Rendering) -> Tree:
    root = Tree(f"[bold]stack {rendering.stack}[/] ({len(rendering.resources)} resources)")
    known = {r.urn for r in rendering.resources}

    def add(resource: Resource, parent: Tree) -> None:
        node = parent.add(_label(resource))
        for child in sorted(rendering.children(resource.urn), key=lambda r: (r.type.startswith("pynomaly:"), r.name)):
            add(child, node)

    for resource in sorted(rendering.resources, key=lambda r: r.name):
        if resource.parent not in known:
            add(resource, root)
    return root


def _metric(inputs: dict[str, Any]) -> tuple[str, str]:
    if inputs.get("metricQueries"):
        queries = inputs["metricQueries"]
        expression = next((q.get("expression") for q in queries if q.get("returnData")), "?")
        names = sorted({q["metric"]["metricName"] for q in queries if "metric" in q})
        return f"{expression}  ({', '.join(names)})", "-"
    metric = f"{inputs.get('namespace', '')} {inputs.get('metricName', '')}"
    return metric, inputs.get("extendedStatistic") or inputs.get("statistic", "")


def alarm_rows(rendering: Rendering) -> list[dict[str, str]]:
    prefix = f"{rendering.stack}-alarms-"
    rows = []
    for alarm in rendering.of_type(METRIC_ALARM):
        i = alarm.plain_inputs
        tags = i.get("tags") or {}
        metric, statistic = _metric(i)
        rows.append(
            {
                "alarm": i.get("name", alarm.name).removeprefix(prefix),
                "metric": metric,
                "statistic": statistic,
                "threshold": f"{COMPARISONS.get(i.get('comparisonOperator', ''), '?')} {_number(i.get('threshold'))}",
                "severity": tags.get("Severity", ""),
                "from": tags.get("Baseline", ""),
            }
        )
    for composite in rendering.of_type(COMPOSITE_ALARM):
        i = composite.plain_inputs
        rows.append(
            {
                "alarm": i.get("alarmName", composite.name).removeprefix(prefix),
                "metric": "composite: " + i.get("alarmRule", "").replace(prefix, ""),
                "statistic": "-",
                "threshold": "-",
                "severity": (i.get("tags") or {}).get("Severity", ""),
                "from": "alarms above",
            }
        )
    return sorted(rows, key=lambda row: (SEVERITY_ORDER.get(row["severity"], 2), row["alarm"]))


def _pairs(items: list[dict[str, Any]]) -> str:
    return ", ".join(f"{p['key']}={_number(p['value'])}" for p in items)


def _fis_target(target: dict[str, Any]) -> str:
    """A FIS target on one line: its type, what picks this stack's resources, its parameters and selection."""
    if target.get("resourceArns"):
        picked = ", ".join(arn.rsplit(":", 1)[-1] for arn in target["resourceArns"])
    elif target.get("resourceTags"):
        picked = "tags " + _pairs(target["resourceTags"])
    else:  # a type named by its parameters only (aws:eks:pod)
        picked = "by parameters"
    extra = [f"{k}={v}" for k, v in (target.get("parameters") or {}).items()]
    extra += [f"{f['path']} in {'|'.join(f['values'])}" for f in target.get("filters") or []]
    where = f" ({'; '.join(extra)})" if extra else ""
    return f"{target['resourceType']} {picked}{where} {target['selectionMode']}"


def fis_rows(rendering: Rendering) -> list[dict[str, str]]:
    """Each FIS experiment template: its action, target, stop conditions (by alarm name) and schedule."""
    prefix = f"{rendering.stack}-alarms-"
    alarm_names = {a.state.get("arn"): a.plain_inputs.get("name", a.name) for a in rendering.of_type(METRIC_ALARM)}
    schedules = {
        urn: f"{i['scheduleExpression']} {i.get('scheduleExpressionTimezone', 'UTC')}"
        for schedule in rendering.of_type(SCHEDULE)
        for i in [schedule.plain_inputs]
        for urn in schedule.property_dependencies.get("target", [])
    }
    rows = []
    for template in rendering.of_type(FIS_TEMPLATE):
        i = template.plain_inputs
        (action,) = i["actions"]
        (target,) = i["targets"]
        stops = [str(alarm_names.get(c.get("value"), c.get("value"))).removeprefix(prefix) for c in i["stopConditions"]]
        rows.append(
            {
                "drill": (i.get("tags") or {}).get("Drill", template.name),
                "action": f"{action['actionId']} {_pairs(action.get('parameters') or [])}".strip(),
                "target": _fis_target(target),
                "stop conditions": ", ".join(stops),
                "schedule": schedules.get(template.urn, "by hand"),
            }
        )
    order = {drill: n for n, drill in enumerate(FIS_DRILLS)}
    return sorted(rows, key=lambda row: (order.get(row["drill"], len(order)), row["drill"]))


def _summary(rendering: Rendering) -> Table:
    """Resources per tier component: the shape of the stack at a glance."""
    by_urn = {r.urn: r for r in rendering.resources}

    def tier_of(resource: Resource) -> str:
        while resource.parent in by_urn and not resource.type.startswith("pynomaly:"):
            resource = by_urn[resource.parent]
        return resource.type if resource.type.startswith("pynomaly:") else "(top level)"

    counts = Counter(tier_of(r) for r in rendering.resources if r.custom)
    table = Table(title=f"stack {rendering.stack}: {sum(counts.values())} cloud resources by tier")
    table.add_column("tier")
    table.add_column("resources", justify="right")
    for tier, count in sorted(counts.items()):
        table.add_row(tier, str(count))
    return table


def print_offline_notice(rendering: Rendering, console: Console) -> None:
    """What an offline rendering is not, and the settings placeholders stood in for."""
    console.print(
        "[yellow]Offline rendering under Pulumi's mocks: what the program declares for this stack. "
        "Not a cloud preview: no provider was asked, and ids, ARNs and endpoints are made up.[/]"
    )
    for key in rendering.placeholders:
        console.print(
            f"[yellow]{key} is not set in the stack file; a placeholder stands in "
            f"(set it with `pulumi config set {key.split(':', 1)[1]} ...` before `pulumi up`).[/]"
        )


def print_plan(rendering: Rendering, console: Console) -> None:
    print_offline_notice(rendering, console)
    console.print(resource_tree(rendering))
    console.print(_summary(rendering))
    rows = alarm_rows(rendering)
    table = Table(title=f"CloudWatch alarms ({len(rows)}); thresholds from baselines.yaml (column 'from')")
    for column in ("alarm", "severity", "metric", "statistic", "threshold", "from"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(escape(row[c]) for c in ("alarm", "severity", "metric", "statistic", "threshold", "from")))
    console.print(table)
    templates = fis_rows(rendering)
    if templates:
        fis = Table(title=f"FIS experiment templates ({len(templates)}); stop conditions: the alarms above, by name")
        for column in FIS_COLUMNS:
            fis.add_column(column, overflow="fold")
        for row in templates:
            fis.add_row(*(escape(row[c]) for c in FIS_COLUMNS))
        console.print(fis)
