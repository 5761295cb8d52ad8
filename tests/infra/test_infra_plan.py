"""``pynomaly-ops plan``: the tree and the alarm table read from the rendering."""

from __future__ import annotations

from infra_helpers import rendered
from rich.console import Console

from pynomaly_cli.plan import alarm_rows, print_plan, short_type


def test_alarm_table_has_every_alarm_with_threshold_severity_and_source():
    r = rendered("prod")
    rows = {row["alarm"]: row for row in alarm_rows(r)}
    alarms = r.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    assert len(rows) == len(alarms) + 1  # and the composite
    cpu = rows["cpu-warning"]
    assert cpu["metric"] == "AWS/EC2 CPUUtilization" and cpu["statistic"] == "Average"
    assert cpu["threshold"] == f"> {int(r.named('prod-alarms-cpu-warning').plain_inputs['threshold'])}"
    assert cpu["severity"] == "warning" and cpu["from"] == "thresholds.cpu_percent.warning"
    assert rows["redis-cpu-critical"]["metric"].startswith("MAX([n0, n1, n2])")
    assert rows["service-down"]["metric"].startswith("composite: ")
    assert [row["severity"] for row in alarm_rows(r)] == sorted(
        (row["severity"] for row in alarm_rows(r)), key=lambda s: s != "critical"
    )


def test_printed_plan_says_it_is_offline_and_shows_tree_and_alarms():
    console = Console(record=True, width=200)
    print_plan(rendered("prod"), console)
    text = console.export_text()
    assert "Offline rendering under Pulumi's mocks" in text and "Not a cloud preview" in text
    assert "prod-fleet-asg aws autoscaling.Group  minSize=" in text
    assert "httpTokens=required" in text
    assert "MAX([n0, n1, n2])" in text  # brackets are printed, not taken for markup
    assert "CloudWatch alarms (" in text


def test_short_type():
    assert short_type("aws:s3/bucket:Bucket") == "aws s3.Bucket"
    assert short_type("kubernetes:apps/v1:Deployment") == "kubernetes apps.Deployment"
    assert short_type("pynomaly:lb:LoadBalancer") == "pynomaly lb.LoadBalancer"


def test_printed_plan_shows_the_fis_templates_with_their_stop_conditions():
    console = Console(record=True, width=250)
    print_plan(rendered("prod"), console)
    text = console.export_text()
    assert "FIS experiment templates (5)" in text
    for shown in ("aws:rds:reboot-db-instances forceFailover=true", "no-healthy-hosts-critical", "by hand"):
        assert shown in text
