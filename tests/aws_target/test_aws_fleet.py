"""Instance loss, the high-load procedure and the worker units, against the fleet in moto: an Auto Scaling group
of three from a launch template, in the ALB's target group."""

from __future__ import annotations

import aws_testkit as kit
import pytest

from aws_target import commands, faults, probes
from pynomaly_ops.waiting import Timeout

ASG = kit.name("fleet", "asg")


def _group() -> dict:
    return kit.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[ASG])["AutoScalingGroups"][0]


def test_instance_loss_terminates_one_and_the_group_replaces_it(stack):
    """moto replaces an instance terminated without decrementing the desired capacity, and registers the new
    one in the target group, as the group does; it leaves the old one there, so the wait sees a replacement."""
    before = sorted(i["InstanceId"] for i in _group()["Instances"])
    fault = faults.kill_process("api-1", outputs=stack)
    assert (fault["pid"], fault["signal"], fault["group"]) == (before[1], "SIGKILL", ASG)

    out = probes.wait_for_instance_out_or_replaced("api-1", fault["pid"], since=fault["time"], outputs=stack)
    assert out["replaced"] and not out["out"] and out["seconds"] >= 0
    back = probes.wait_for_instance_status("api-1", "UP", since=fault["time"], outputs=stack)
    assert len(back["instances"]) == 3 and before[1] not in back["instances"]
    assert set(back["instances"]) - set(before)  # a new instance took its place
    assert faults.ensure_running("api-1", outputs=stack) | {"time": 0} == {
        "name": "api-1",
        "in_service": 3,
        "desired": 3,
        "time": 0,
    }
    assert probes.instance_count("UP", outputs=stack) == 3  # the group's instances (not the one it let go)


def test_an_instance_out_of_the_load_balancer_counts_as_out(stack):
    """On AWS the group deregisters the instance it terminates (draining): the wait's first way out."""
    fault = faults.kill_process("api-0", outputs=stack)
    group = _group()["TargetGroupARNs"][0]
    kit.client("elbv2").deregister_targets(TargetGroupArn=group, Targets=[{"Id": fault["pid"]}])
    out = probes.wait_for_instance_out_or_replaced("api-0", fault["pid"], outputs=stack)
    assert out["out"] and out["state"] == "unused"


@pytest.mark.parametrize(
    ("name", "sig", "message"),
    [
        ("api-3", "SIGKILL", r"no API instance 'api-3': group drill-fleet-asg has api-0, api-1, api-2"),
        ("web-1", 9, "no API instance 'web-1'"),
        ("api-1", "SIGSTOP", "SIGKILL only, not 'SIGSTOP'"),
    ],
)
def test_an_unknown_instance_or_signal_is_refused(stack, name, sig, message):
    with pytest.raises(faults.FaultError, match=message):
        faults.kill_process(name, sig, outputs=stack)
    assert len(_group()["Instances"]) == 3


def test_only_the_up_state_has_an_aws_meaning(stack):
    with pytest.raises(probes.ProbeError, match="awaited UP"):
        probes.wait_for_instance_status("api-1", "DOWN", outputs=stack)


def test_the_high_load_procedure_scales_three_to_six_and_back(stack):
    up = faults.scale_instances(6, outputs=stack)
    assert (up["from"], up["to"]) == (3, 6)
    assert _group()["DesiredCapacity"] == 6 and len(probes.wait_for_capacity(outputs=stack)["instances"]) == 6
    down = faults.scale_instances(3, outputs=stack)
    assert (down["from"], down["to"]) == (6, 3) and len(_group()["Instances"]) == 3


def test_a_size_outside_the_groups_range_is_refused(stack):
    with pytest.raises(faults.FaultError, match="holds 3 to 6 instances, not 7"):
        faults.scale_instances(7, outputs=stack)


def test_a_capacity_never_reached_times_out_naming_what_is_missing(stack):
    with pytest.raises(Timeout, match="3 instances in service, 3 healthy in the load balancer, of 4"):
        probes.wait_for_capacity(4, timeout_s=0.05, outputs=stack)


def test_the_workers_are_stopped_and_started_through_ssm_run_command(stack):
    """moto keeps each command with its parameters and answers every invocation Success."""
    in_service = sorted(i["InstanceId"] for i in _group()["Instances"])
    stopped = faults.stop_workers(outputs=stack)
    started = faults.start_workers(outputs=stack)
    assert stopped["names"] == started["names"] == in_service
    sent = {c["CommandId"]: c for c in kit.client("ssm").list_commands()["Commands"]}
    for done, verb in ((stopped, "stop"), (started, "start")):
        command = sent[done["command_id"]]
        assert command["DocumentName"] == commands.DOCUMENT == "AWS-RunShellScript"
        assert command["Parameters"] == {"commands": [f"systemctl {verb} pynomaly-worker.service"]}
        assert set(in_service) <= set(command["InstanceIds"])


def test_a_worker_command_that_fails_on_an_instance_is_a_fault(stack, stub):
    """A failed invocation (moto answers Success only): stubbed, with the call's parameters asserted."""
    ids = sorted(i["InstanceId"] for i in _group()["Instances"])
    ssm = stub("ssm")
    command_id = "11111111-2222-3333-4444-555555555555"
    ssm.add_response(
        "send_command",
        {"Command": {"CommandId": command_id}},
        {
            "InstanceIds": ids,
            "DocumentName": "AWS-RunShellScript",
            "Parameters": {"commands": ["systemctl stop pynomaly-worker.service"]},
            "Comment": "pynomaly drill: stop workers",
        },
    )
    ssm.add_client_error("get_command_invocation", "InvocationDoesNotExist")  # not yet, for a moment
    for i, status in zip(ids, ("Success", "InProgress", "Success"), strict=True):
        ssm.add_response("get_command_invocation", {"Status": status}, {"CommandId": command_id, "InstanceId": i})
    for i, status in zip(ids, ("Success", "Failed", "Success"), strict=True):
        ssm.add_response("get_command_invocation", {"Status": status}, {"CommandId": command_id, "InstanceId": i})
    with pytest.raises(faults.FaultError, match=rf"did not succeed on \{{'{ids[1]}': 'Failed'\}}"):
        faults.stop_workers(outputs=stack)
