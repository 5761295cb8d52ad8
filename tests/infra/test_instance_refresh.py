"""The refresh that carries a release to the fleet (infra/instance_refresh.py), against the Auto Scaling API as
botocore's Stubber answers it (moto does not implement StartInstanceRefresh)."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber

from infra import instance_refresh as ir

GROUP, TEMPLATE = "prod-fleet-asg", "lt-0abc"


@pytest.fixture
def client():
    c = boto3.client("autoscaling", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(c) as stub:
        c.stub = stub  # type: ignore[attr-defined]
        yield c
        stub.assert_no_pending_responses()


def _on(client, version: str) -> None:
    group = {
        "AutoScalingGroupName": GROUP,
        "LaunchTemplate": {"LaunchTemplateId": TEMPLATE, "Version": version},
        "MinSize": 3,
        "MaxSize": 6,
        "DesiredCapacity": 3,
        "DefaultCooldown": 300,
        "AvailabilityZones": ["us-east-1a"],
        "HealthCheckType": "ELB",
        "CreatedTime": "2026-12-01T00:00:00Z",
    }
    client.stub.add_response(
        "describe_auto_scaling_groups", {"AutoScalingGroups": [group]}, {"AutoScalingGroupNames": [GROUP]}
    )


def _status(client, status: str, reason: str = "") -> None:
    refresh = {"InstanceRefreshId": "r-1", "AutoScalingGroupName": GROUP, "Status": status}
    if reason:
        refresh["StatusReason"] = reason
    expected = {"AutoScalingGroupName": GROUP, "InstanceRefreshIds": ["r-1"]}
    client.stub.add_response("describe_instance_refreshes", {"InstanceRefreshes": [refresh]}, expected)


def test_a_new_version_is_the_refresh_s_desired_configuration_with_auto_rollback(client):
    _on(client, "3")
    expected = {
        "AutoScalingGroupName": GROUP,
        "Strategy": "Rolling",
        "DesiredConfiguration": {"LaunchTemplate": {"LaunchTemplateId": TEMPLATE, "Version": "4"}},
        "Preferences": {
            "MinHealthyPercentage": 100,
            "MaxHealthyPercentage": 200,
            "InstanceWarmup": 300,
            "SkipMatching": True,
            "AutoRollback": True,
        },
    }
    client.stub.add_response("start_instance_refresh", {"InstanceRefreshId": "r-1"}, expected)
    assert ir.start(client, GROUP, TEMPLATE, "4", 300) == "r-1"


def test_a_group_already_on_the_version_is_not_refreshed(client):
    _on(client, "4")
    assert ir.start(client, GROUP, TEMPLATE, "4", 300) is None  # the Stubber fails any other call


def test_the_outcome_is_awaited_until_it_succeeds(client):
    for status in ("Pending", "InProgress", "Successful"):
        _status(client, status)
    naps: list[float] = []
    ir.outcome(client, GROUP, "r-1", 3600, sleep=naps.append)
    assert naps == [ir.POLL_S, ir.POLL_S]


def test_a_rolled_back_refresh_fails_the_deploy_naming_the_version_the_group_is_back_on(client):
    _status(client, "RollbackSuccessful", "instances failed to become healthy")
    _on(client, "3")
    with pytest.raises(ir.RefreshFailed, match=r"ended RollbackSuccessful: instances failed.*lt-0abc version 3"):
        ir.outcome(client, GROUP, "r-1", 3600, sleep=lambda _s: None)


def test_a_refresh_that_outlasts_the_wait_is_reported_not_cancelled(client):
    _status(client, "InProgress")
    _status(client, "InProgress")
    times = iter([0.0, 100.0, 5000.0])
    with pytest.raises(ir.RefreshFailed, match="still InProgress after 3600s"):
        ir.outcome(client, GROUP, "r-1", 3600, sleep=lambda _s: None, clock=lambda: next(times))


def test_only_a_new_template_or_version_starts_a_refresh():
    provider = ir._Provider()
    old = {"group": GROUP, "template_id": TEMPLATE, "version": "3", "warmup_s": 300}
    assert provider.diff("id", old, {**old, "version": "4"}).changes is True
    assert provider.diff("id", old, {**old, "warmup_s": 120}).changes is False
