"""Alarms tier: every runbook number has its alarm with exactly that value.

The expected thresholds are computed here from the numbers file itself, so a
changed number in baselines.yaml must show up in the alarms, and a test
render against a modified copy proves it does.
"""

from __future__ import annotations

import json

import pytest
from infra_helpers import inputs, rendered

from pynomaly_cli.offline import PLACEHOLDERS
from pynomaly_ops import baselines
from pynomaly_ops import settings as stack_settings

GIB = 1024**3
SEVERITIES = ("warning", "critical")


def expected_thresholds(b: baselines.Baselines, cfg) -> dict[str, float]:
    """Alarm role -> threshold, from the numbers file (units converted where the metric's differ)."""
    t = b.thresholds
    pairs = {
        "cpu": t.cpu_percent,
        "memory": t.memory_percent,
        "disk": t.disk_percent,
        "error-rate": t.error_rate_percent,
        "redis-cpu": t.cpu_percent,
        "redis-memory": t.memory_percent,
    }
    dbs = ["db", *(["db-replica"] if cfg.db.read_replica else [])]
    for db in dbs:
        pairs[f"{db}-cpu"] = t.cpu_percent
    out = {f"{k}-{sev}": level.at(sev) for k, level in pairs.items() for sev in SEVERITIES}
    for sev in SEVERITIES:
        out[f"response-time-p95-{sev}"] = t.response_time_p95_ms.at(sev) / 1000
        for db in dbs:
            out[f"{db}-free-storage-{sev}"] = cfg.db.allocated_storage_gb * GIB * (100 - t.disk_percent.at(sev)) / 100
            out[f"{db}-connections-{sev}"] = b.database.max_connections * t.memory_percent.at(sev) / 100
        if cfg.db.read_replica:
            out[f"db-replica-lag-{sev}"] = b.database.replica_lag_s.at(sev)
    out |= {
        "healthy-hosts-below-normal-warning": b.scaling.instances_normal,
        "queue-age-warning": b.app_alarms.processing_lag_s,
        "processing-lag-warning": b.app_alarms.processing_lag_s,
        "inference-time-warning": b.app_alarms.inference_time_s,
        "auth-failure-rate-warning": b.app_alarms.auth_failure_rate_percent,
        "unhealthy-hosts-warning": 0,
        "no-healthy-hosts-critical": 1,
        "redis-evictions-warning": 0,
        "dlq-not-empty-warning": 0,
    }
    return out


def alarms_of(r) -> dict[str, dict]:
    prefix = f"{r.stack}-alarms-"
    return {a.name.removeprefix(prefix): a.plain_inputs for a in r.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}


def test_every_alarm_has_exactly_its_numbers_file_value(r, cfg, numbers):
    expected = expected_thresholds(numbers, cfg)
    actual = {role: a["threshold"] for role, a in alarms_of(r).items()}
    assert actual == pytest.approx(expected)


def test_every_threshold_pair_has_a_warning_and_a_critical_alarm(r, numbers):
    tagged = {a["tags"]["Baseline"] for a in alarms_of(r).values()}
    for name in numbers.thresholds.levels():
        for sev in SEVERITIES:
            assert f"thresholds.{name}.{sev}" in tagged
    for name in type(numbers.app_alarms).model_fields:
        if name != "source":
            assert f"app_alarms.{name}" in tagged


def test_severity_tags_and_actions_go_to_the_topic_of_that_severity(r):
    topics = {sev: r.named(f"{r.stack}-alarms-{sev}").state["arn"] for sev in SEVERITIES}
    for role, alarm in alarms_of(r).items():
        severity = alarm["tags"]["Severity"]
        assert role.endswith(severity)
        assert alarm["alarmActions"] == alarm["okActions"] == [topics[severity]]


def _metric(alarm) -> tuple[str, str, dict, str]:
    stat = alarm.get("extendedStatistic") or alarm.get("statistic")
    return alarm["namespace"], alarm["metricName"], alarm["dimensions"], stat


def _queries(alarm) -> tuple[str, dict[str, tuple[str, str]]]:
    expression = next(q["expression"] for q in alarm["metricQueries"] if q.get("returnData"))
    metrics = {
        q["id"]: (q["metric"]["namespace"], q["metric"]["metricName"]) for q in alarm["metricQueries"] if "metric" in q
    }
    return expression, metrics


def test_fleet_alarms_watch_the_right_metrics(r):
    alarms, asg = alarms_of(r), {"AutoScalingGroupName": f"{r.stack}-fleet-asg"}
    alb = {"LoadBalancer": r.named(f"{r.stack}-lb-alb").state["arnSuffix"]}
    for sev in SEVERITIES:
        assert _metric(alarms[f"cpu-{sev}"]) == ("AWS/EC2", "CPUUtilization", asg, "Average")
        assert _metric(alarms[f"memory-{sev}"])[:3] == ("CWAgent", "mem_used_percent", asg)
        assert _metric(alarms[f"disk-{sev}"])[:3] == ("CWAgent", "disk_used_percent", asg)
        assert _metric(alarms[f"response-time-p95-{sev}"]) == ("AWS/ApplicationELB", "TargetResponseTime", alb, "p95")
        expression, metrics = _queries(alarms[f"error-rate-{sev}"])
        assert sorted(m for _, m in metrics.values()) == ["HTTPCode_Target_5XX_Count", "RequestCount"]
        errors = next(i for i, (_, m) in metrics.items() if m.startswith("HTTPCode"))
        requests = next(i for i, (_, m) in metrics.items() if m == "RequestCount")
        assert f"100 * FILL({errors}, 0) / {requests}" in expression
    assert alarms["unhealthy-hosts-warning"]["comparisonOperator"] == "GreaterThanThreshold"
    assert _metric(alarms["unhealthy-hosts-warning"])[1] == "UnHealthyHostCount"
    assert alarms["healthy-hosts-below-normal-warning"]["comparisonOperator"] == "LessThanThreshold"
    assert _metric(alarms["healthy-hosts-below-normal-warning"])[1] == "HealthyHostCount"


def test_data_tier_alarms_watch_the_right_metrics(r, cfg):
    alarms, stack = alarms_of(r), r.stack
    primary = {"DBInstanceIdentifier": f"{stack}-database-primary"}
    assert _metric(alarms["db-cpu-warning"])[:3] == ("AWS/RDS", "CPUUtilization", primary)
    assert _metric(alarms["db-free-storage-warning"])[1] == "FreeStorageSpace"
    assert alarms["db-free-storage-critical"]["comparisonOperator"] == "LessThanThreshold"
    assert _metric(alarms["db-connections-warning"])[1] == "DatabaseConnections"
    if cfg.db.read_replica:
        replica = {"DBInstanceIdentifier": f"{stack}-database-replica"}
        assert _metric(alarms["db-replica-lag-critical"])[:3] == ("AWS/RDS", "ReplicaLag", replica)
    nodes = 1 + cfg.cache.replicas
    for role, metric in (
        ("redis-cpu-warning", "EngineCPUUtilization"),
        ("redis-memory-critical", "DatabaseMemoryUsagePercentage"),
    ):
        expression, metrics = _queries(alarms[role])
        assert expression.startswith("MAX(")
        assert set(metrics.values()) == {("AWS/ElastiCache", metric)} and len(metrics) == nodes
    expression, metrics = _queries(alarms["redis-evictions-warning"])
    assert set(metrics.values()) == {("AWS/ElastiCache", "Evictions")}
    jobs, dlq = {"QueueName": f"{stack}-queue-jobs"}, {"QueueName": f"{stack}-queue-jobs-dlq"}
    assert _metric(alarms["queue-age-warning"])[:3] == ("AWS/SQS", "ApproximateAgeOfOldestMessage", jobs)
    assert _metric(alarms["dlq-not-empty-warning"])[:3] == ("AWS/SQS", "ApproximateNumberOfMessagesVisible", dlq)


def test_app_alarms_read_the_service_metrics_in_the_custom_namespace(r):
    from pynomaly_ops import metrics as names

    alarms = alarms_of(r)
    assert _metric(alarms["processing-lag-warning"])[:2] == ("Pynomaly/App", names.JOB_PROCESSING_LAG)
    _, metrics = _queries(alarms["auth-failure-rate-warning"])
    assert set(metrics.values()) == {
        ("Pynomaly/App", names.AUTH_FAILURES),
        ("Pynomaly/App", names.AUTH_REQUESTS),
    }
    _, metrics = _queries(alarms["inference-time-warning"])
    assert {m for _, m in metrics.values()} == {
        f"{names.INFERENCE_DURATION}_sum",
        f"{names.INFERENCE_DURATION}_count",
    }


def test_service_down_composite_pages_critical(r):
    (down,) = r.of_type("aws:cloudwatch/compositeAlarm:CompositeAlarm")
    i = down.plain_inputs
    names = {a.plain_inputs["name"] for a in r.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
    referenced = {part.split('"')[1] for part in i["alarmRule"].split(" OR ")}
    assert referenced == {f"{r.stack}-alarms-no-healthy-hosts-critical", f"{r.stack}-alarms-error-rate-critical"}
    assert referenced <= names
    assert i["alarmActions"] == [r.named(f"{r.stack}-alarms-critical").state["arn"]]
    assert i["tags"]["Severity"] == "critical" and i["tags"]["Priority"] == "P0"


def test_outputs_list_every_alarm_and_both_topics(r):
    alarm_names = {a.plain_inputs["name"] for a in r.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
    alarm_names.add(r.of_type("aws:cloudwatch/compositeAlarm:CompositeAlarm")[0].plain_inputs["alarmName"])
    outputs = {names["cloudwatch"] for names in r.outputs["alarms"].values() if "cloudwatch" in names}
    assert outputs == alarm_names  # the CloudWatch alarms and the composite, by catalogue key
    rule_groups = [
        g
        for rule in r.of_type("kubernetes:monitoring.coreos.com/v1:PrometheusRule")
        for g in rule.plain_inputs["spec"]["groups"]
    ]
    k8s = {names["kubernetes"] for names in r.outputs["alarms"].values() if "kubernetes" in names}
    assert k8s == {rule["alert"] for group in rule_groups for rule in group["rules"]}  # empty without the operator
    assert r.outputs["alarm_topic_arns"] == {sev: r.named(f"{r.stack}-alarms-{sev}").state["arn"] for sev in SEVERITIES}


def test_dashboard_graphs_every_alarmed_metric_with_its_thresholds(r):
    body = json.loads(inputs(r, f"{r.stack}-dashboard-main")["dashboardBody"])
    titles = {w["properties"]["title"].split(":")[0] for w in body["widgets"]}
    keys = {role.rsplit("-", 1)[0] for role in alarms_of(r)}
    assert titles == keys
    cpu = next(w for w in body["widgets"] if w["properties"]["title"].startswith("cpu:"))
    lines = {a["label"]: a["value"] for a in cpu["properties"]["annotations"]["horizontal"]}
    assert lines == {sev: baselines.load().thresholds.cpu_percent.at(sev) for sev in SEVERITIES}


# ------------------------------------------------------- a changed number


def test_changing_a_number_in_the_file_changes_the_alarms(changed):
    numbers, r = changed
    cfg = stack_settings.from_stack_file("dev", PLACEHOLDERS)
    actual = {role: a["threshold"] for role, a in alarms_of(r).items()}
    assert actual == pytest.approx(expected_thresholds(numbers, cfg))
    original = {role: a["threshold"] for role, a in alarms_of(rendered("dev")).items()}
    assert actual["cpu-warning"] == 70 != original["cpu-warning"]
    assert actual["response-time-p95-critical"] == 0.8 != original["response-time-p95-critical"]
    assert actual["queue-age-warning"] == 240 != original["queue-age-warning"]


def test_changing_a_number_in_the_file_changes_fleet_and_database(changed):
    _, r = changed
    asg = inputs(r, "dev-fleet-asg")
    assert (asg["minSize"], asg["desiredCapacity"], asg["maxSize"]) == (4, 4, 8)
    target = inputs(r, "dev-fleet-cpu-target")["targetTrackingConfiguration"]["targetValue"]
    assert target == 60
    params = {p["name"]: p["value"] for p in inputs(r, "dev-database-params")["parameters"]}
    assert params["max_connections"] == "300"
