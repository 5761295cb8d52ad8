"""``pynomaly-ops plan``: what a stack declares, as a tree and an alarm table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from pynomaly_ops.offline import Rendering, Resource

# Inputs worth showing per resource type; everything else stays in `--json`.
KEY_SETTINGS: dict[str, tuple[str, ...]] = {
    "aws:ec2/vpc:Vpc": ("cidrBlock",),
    "aws:ec2/subnet:Subnet": ("cidrBlock", "availabilityZone"),
    "aws:ec2/natGateway:NatGateway": ("subnetId",),
    "aws:lb/loadBalancer:LoadBalancer": ("internal", "enableDeletionProtection", "dropInvalidHeaderFields"),
    "aws:lb/listener:Listener": ("port", "protocol", "sslPolicy"),
    "aws:lb/targetGroup:TargetGroup": ("port", "protocol"),
    "aws:autoscaling/group:Group": ("minSize", "desiredCapacity", "maxSize", "healthCheckType"),
    "aws:ec2/launchTemplate:LaunchTemplate": ("imageId", "instanceType"),
    "aws:rds/instance:Instance": (
        "instanceClass",
        "engineVersion",
        "multiAz",
        "backupRetentionPeriod",
        "deletionProtection",
    ),
    "aws:elasticache/replicationGroup:ReplicationGroup": (
        "nodeType",
        "numCacheClusters",
        "automaticFailoverEnabled",
        "multiAzEnabled",
    ),
    "aws:sqs/queue:Queue": ("name", "visibilityTimeoutSeconds"),
    "aws:s3/bucket:Bucket": ("bucket",),
    "aws:eks/cluster:Cluster": ("version",),
    "aws:eks/nodeGroup:NodeGroup": ("instanceTypes", "scalingConfig"),
}


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _label(resource: Resource) -> str:
    label = f"[bold]{resource.name}[/] [dim]{resource.type}[/]"
    shown = [
        f"{k}={_short(resource.plain_inputs[k])}"
        for k in KEY_SETTINGS.get(resource.type, ())
        if k in resource.plain_inputs
    ]
    return label + (f"  {' '.join(shown)}" if shown else "")


def resource_tree(rendering: Rendering) -> Tree:
    root = Tree(f"[bold]stack {rendering.stack}[/] ({len(rendering.resources)} resources)")
    known = {r.urn for r in rendering.resources}
    nodes: dict[str | None, Tree] = {}

    def add(resource: Resource, parent: Tree) -> None:
        node = parent.add(_label(resource))
        nodes[resource.urn] = node
        for child in rendering.children(resource.urn):
            add(child, node)

    for resource in rendering.resources:
        if resource.parent not in known:
            add(resource, root)
    return root


def alarm_rows(rendering: Rendering) -> list[dict[str, str]]:
    rows = []
    for alarm in rendering.of_type("aws:cloudwatch/metricAlarm:MetricAlarm"):
        i = alarm.plain_inputs
        if i.get("metricQueries"):
            expr = next((q.get("expression") for q in i["metricQueries"] if q.get("returnData")), "?")
            metric, statistic = f"math: {expr}", "-"
        else:
            metric = f"{i.get('namespace', '')}/{i.get('metricName', '')}"
            statistic = i.get("extendedStatistic") or i.get("statistic", "")
        rows.append(
            {
                "alarm": i.get("name", alarm.name),
                "metric": metric,
                "statistic": statistic,
                "threshold": f"{i.get('comparisonOperator', '')} {i.get('threshold', '')}",
                "severity": (i.get("tags") or {}).get("Severity", ""),
            }
        )
    return rows


def print_plan(rendering: Rendering, console: Console) -> None:
    console.print(
        "[yellow]Offline rendering under Pulumi's mocks: what the program declares for this stack. "
        "Not a cloud preview: no provider was asked, and ids, ARNs and endpoints are made up.[/]"
    )
    for key in rendering.placeholders:
        console.print(
            f"[yellow]{key} is not set in the stack file; a placeholder stands in "
            f"(set it with `pulumi config set {key.split(':', 1)[1]} ...` before `pulumi up`).[/]"
        )
    console.print(resource_tree(rendering))
    table = Table(title=f"CloudWatch alarms ({len(alarm_rows(rendering))})")
    for column in ("alarm", "metric", "statistic", "threshold", "severity"):
        table.add_column(column)
    for row in alarm_rows(rendering):
        table.add_row(*row.values())
    console.print(table)
