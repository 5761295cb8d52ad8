"""The maintenance switch on the ALB's HTTPS listener, and detection: the catalogue's CloudWatch alarms, their
state now (moto) and their state history (moto has no DescribeAlarmHistory: stubbed)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aws_testkit as kit
import pytest

from aws_target import faults, probes
from pynomaly_ops import maintenance
from pynomaly_ops.alarms import SERVICE_DOWN_KEY


def _default_actions(stack: str) -> list[dict]:
    arn = json.loads(Path(stack).read_text())["https_listener_arn"]
    return kit.client("elbv2").describe_listeners(ListenerArns=[arn])["Listeners"][0]["DefaultActions"]


def test_maintenance_mode_switches_the_listeners_default_action_and_back(stack):
    forward = _default_actions(stack)
    assert not probes.maintenance_page_served(outputs=stack)

    on = faults.maintenance_on(outputs=stack)
    assert probes.wait_for_maintenance_page(True, since=on["time"], outputs=stack)["served"]
    (page,) = _default_actions(stack)
    assert page == {
        "Type": "fixed-response",
        "FixedResponseConfig": {"ContentType": "text/html", "StatusCode": "503", "MessageBody": maintenance.PAGE},
    }
    assert faults.maintenance_on(outputs=stack)["maintenance"] == "on"  # again: the same state

    for _ in range(2):  # a rollback: idempotent
        faults.maintenance_off(outputs=stack)
        assert _default_actions(stack) == forward
    assert not probes.wait_for_maintenance_page(False, outputs=stack)["served"]


# --- detection ---------------------------------------------------------------------------------------------------
def test_an_alarm_in_alarm_is_active_by_its_catalogue_key(stack):
    names = kit.alarm_names()
    watched = kit.WATCHED_ALARMS
    assert probes.active_alarms(watched, outputs=stack) == {}
    cloudwatch = kit.client("cloudwatch")
    cloudwatch.set_alarm_state(AlarmName=names[watched[1]]["cloudwatch"], StateValue="ALARM", StateReason="drill")
    assert probes.active_alarms(watched, outputs=stack) == {watched[1]: "firing"}
    cloudwatch.set_alarm_state(AlarmName=names[watched[1]]["cloudwatch"], StateValue="OK", StateReason="drill")
    assert probes.active_alarms(watched, outputs=stack) == {}


def test_an_alarm_key_the_stack_has_not_is_named_with_those_it_has(stack):
    with pytest.raises(probes.ProbeError, match=r"no CloudWatch alarm 'made_up.critical'; it has: .*error_rate"):
        probes.active_alarms(["made_up.critical"], outputs=stack)


def _history(name: str, at: datetime, old: str, new: str) -> dict:
    data = {"version": "1.0", "oldState": {"stateValue": old}, "newState": {"stateValue": new}}
    return {
        "AlarmName": name,
        "AlarmType": "CompositeAlarm" if name.endswith("service-down") else "MetricAlarm",
        "Timestamp": at,
        "HistoryItemType": "StateUpdate",
        "HistorySummary": f"Alarm updated from {old} to {new}",
        "HistoryData": json.dumps(data),
    }


def test_alarm_history_moto_cannot_describe_history_so_it_is_stubbed(stack, stub):
    """Detection: when each catalogue alarm went to ALARM since the fault, from its state history (metric and
    composite alarms, oldest first, across pages); one that did not is left out."""
    names = {k: v["cloudwatch"] for k, v in kit.alarm_names().items()}
    since = time.time() - 60
    fault = datetime.fromtimestamp(since, UTC)
    cloudwatch = stub("cloudwatch")

    def expect(name: str, items: list[dict], token: str | None = None, next_token: str | None = None) -> None:
        params = {
            "AlarmName": name,
            "AlarmTypes": ["MetricAlarm", "CompositeAlarm"],
            "HistoryItemType": "StateUpdate",
            "StartDate": fault,
            "ScanBy": "TimestampAscending",
        }
        reply = {"AlarmHistoryItems": items} | ({"NextToken": next_token} if next_token else {})
        cloudwatch.add_response("describe_alarm_history", reply, params | ({"NextToken": token} if token else {}))

    error_rate, down = names["error_rate.critical"], names[SERVICE_DOWN_KEY]
    expect(error_rate, [_history(error_rate, fault + timedelta(seconds=5), "OK", "INSUFFICIENT_DATA")], None, "p2")
    expect(error_rate, [_history(error_rate, fault + timedelta(seconds=42), "INSUFFICIENT_DATA", "ALARM")], "p2")
    expect(down, [_history(down, fault + timedelta(seconds=70), "OK", "ALARM")])
    expect(names["dlq_not_empty.warning"], [])

    fired = probes.alarms_fired(
        ["error_rate.critical", SERVICE_DOWN_KEY, "dlq_not_empty.warning"], since, outputs=stack
    )
    assert fired == {
        "error_rate.critical": {"alarm": error_rate, "at": pytest.approx(since + 42), "seconds": pytest.approx(42)},
        SERVICE_DOWN_KEY: {"alarm": down, "at": pytest.approx(since + 70), "seconds": pytest.approx(70)},
    }

    expect(down, [])
    expect(down, [_history(down, fault + timedelta(seconds=75), "OK", "ALARM")])
    detected = probes.wait_for_alarm(SERVICE_DOWN_KEY, timeout_s=5, since=since, outputs=stack)
    assert (detected["key"], detected["seconds"]) == (SERVICE_DOWN_KEY, pytest.approx(75))
