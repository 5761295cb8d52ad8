"""Dashboard tier: one CloudWatch dashboard of the runbook's key metrics.

One graph per watched metric, drawn from the same specs as the alarms, with
the warning and critical thresholds as horizontal lines: what the on-call
sees is exactly what pages them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import groupby
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.alarms import AlarmSpec
from infra.tier import Tier

WIDTH, HEIGHT, COLUMNS = 8, 6, 3


@dataclass(frozen=True)
class DashboardArgs:
    region: str
    specs: list[AlarmSpec]


def _series(spec: AlarmSpec) -> list:
    """Dashboard metric rows for one spec (the expression, then hidden inputs)."""
    rows: list[list[Any]] = []  # CloudWatch's metric rows mix names, dimensions and an options object
    if spec.expression:
        rows.append([{"expression": spec.expression, "label": spec.key, "id": "e1"}])
    for qid, m in spec.metrics.items():
        dims = [x for k, v in m.dimensions.items() for x in (k, v)]
        opts: dict[str, str | bool] = {"stat": m.stat, "id": qid}
        if spec.expression:
            opts["visible"] = False
        rows.append([m.namespace, m.name, *dims, opts])
    return rows


def widget(index: int, specs: list[AlarmSpec], region: str) -> dict:
    first = specs[0]
    return {
        "type": "metric",
        "x": (index % COLUMNS) * WIDTH,
        "y": (index // COLUMNS) * HEIGHT,
        "width": WIDTH,
        "height": HEIGHT,
        "properties": {
            "title": f"{first.key}: {first.description}",
            "region": region,
            "period": 60,
            "view": "timeSeries",
            "metrics": _series(first),
            "annotations": {"horizontal": [{"label": s.severity, "value": s.threshold} for s in specs]},
        },
    }


def body(specs: list[AlarmSpec], region: str) -> dict:
    grouped = [list(g) for _, g in groupby(specs, key=lambda s: s.key)]
    return {"widgets": [widget(i, g, region) for i, g in enumerate(grouped)]}


class Dashboard(Tier):
    TIER = "dashboard"

    dashboard_name: pulumi.Output[str]

    def __init__(
        self, stack: str, tags: dict[str, str], args: DashboardArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__(stack, tags, opts)
        board = aws.cloudwatch.Dashboard(
            self.name_of("main"),
            dashboard_name=self.name_of("main"),
            dashboard_body=pulumi.Output.from_input(body(args.specs, args.region)).apply(json.dumps),
            opts=self.child,
        )
        self.dashboard_name = board.dashboard_name
        self.register_outputs({"dashboard_name": self.dashboard_name})
