"""A drill's fault through the stack's FIS experiment templates (aws_target/fis.py, ``drill run --via fis``), in
moto: its FIS starts, tags, resolves ARN-named targets, runs and stops experiments, but runs no action (nothing
is terminated, failed over or deleted by it), so where FIS would pick an instance by tag, the tests lose the
instance themselves, as FIS would, and check the library names the one that went."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aws_testkit as kit
import pytest
from moto import mock_aws
from moto.moto_api import state_manager

from aws_target import fis
from aws_target.faults import FaultError
from pynomaly_ops import outputs as keys
from pynomaly_ops.waiting import wait_for

ASG = kit.name("fleet", "asg")


def _instances() -> list[str]:
    g = kit.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[ASG])["AutoScalingGroups"][0]
    return sorted(i["InstanceId"] for i in g["Instances"] if i["LifecycleState"] == "InService")


@pytest.fixture(autouse=True)
def started(monkeypatch) -> None:
    monkeypatch.setattr(fis, "_started", [])  # each test's experiments its own (each has its own moto)


@pytest.fixture
def fis_stack(tmp_path) -> Iterator[str]:
    """The stack in moto with FIS enabled: its drills' templates exported as the program exports them."""
    with mock_aws():
        document = kit.build_stack()
        db = kit.client("rds").describe_db_instances(DBInstanceIdentifier=document[keys.DB_PRIMARY_IDENTIFIER])
        templates = {
            "instance-loss": kit.instance_loss_template(),
            "database-failover": kit.fis_template(
                "aws:rds:reboot-db-instances",
                "aws:rds:db",
                {"resourceArns": [db["DBInstances"][0]["DBInstanceArn"]], "selectionMode": "ALL"},
                {"forceFailover": "true"},
            ),
        }
        yield kit.write_outputs(tmp_path / "outputs.json", document | {keys.FIS_EXPERIMENT_TEMPLATES: templates})


def test_the_database_failover_starts_the_stacks_template_and_names_the_old_primary(fis_stack, calls):
    db = kit.client("rds").describe_db_instances()["DBInstances"][0]
    before = time.time()
    fault = fis.inject("database-failover", "kill_database_primary", outputs=fis_stack, stack=kit.STACK)
    assert (
        fault["via"] == "fis" and fault["member"] == db["AvailabilityZone"]
    )  # what wait_for_new_database_primary takes
    assert fault["name"] == db["DBInstanceIdentifier"] and before - 5 <= fault["time"] <= time.time()
    experiment = kit.client("fis").get_experiment(id=fault["experiment"])["experiment"]
    assert experiment["experimentTemplateId"] == fault["template"]
    assert experiment["tags"] == {"pynomaly:drill": "database-failover", "Environment": kit.STACK}
    assert experiment["state"]["status"] == "completed"
    assert ("fis", "StartExperiment") in calls.operations() and not fis.stop_started()  # done: nothing to stop


def test_the_instance_fis_picks_by_tag_is_named_once_it_is_gone(fis_stack):
    """moto resolves no tag-selected target and terminates nothing: the test terminates one, as FIS would, while
    the library waits for one of the group's instances to go."""
    lost = _instances()[2]
    fis_api, asg = kit.client("fis"), kit.client("autoscaling")  # made here: boto3's default session is not thread-safe

    def terminate_once_started() -> None:
        wait_for("the experiment started", lambda: fis_api.list_experiments()["experiments"], 30, 0.01)
        asg.terminate_instance_in_auto_scaling_group(InstanceId=lost, ShouldDecrementDesiredCapacity=False)

    fis_acts = threading.Thread(target=terminate_once_started)
    fis_acts.start()
    fault = fis.inject("instance-loss", "kill_process", outputs=fis_stack, stack=kit.STACK, timeout_s=30)
    fis_acts.join()
    assert fault["pid"] == lost  # the key the experiment's wait_for_instance_out_or_replaced takes


def test_an_instance_named_among_the_resolved_targets_is_the_one_hit(fis_stack):
    """A target FIS resolves (here one named by ARN) names what it hit without waiting for it to go."""
    aimed = _instances()[0]
    arn = f"arn:aws:ec2:{kit.REGION}:{kit.ACCOUNT}:instance/{aimed}"
    template = kit.fis_template("aws:ec2:terminate-instances", "aws:ec2:instance", {"resourceArns": [arn],
                                                                                "selectionMode": "ALL"})  # fmt: skip
    document = json.loads(Path(fis_stack).read_text()) | {keys.FIS_EXPERIMENT_TEMPLATES: {"instance-loss": template}}
    path = kit.write_outputs(Path(fis_stack).with_name("by-arn.json"), document)
    fault = fis.inject("instance-loss", "kill_process", outputs=path, stack=kit.STACK, timeout_s=1)
    assert fault["pid"] == aimed


def test_a_drill_the_stack_has_no_template_for_is_refused_naming_the_setting(fis_stack):
    with pytest.raises(FaultError, match=r"no FIS experiment template for cache-failover .*enable fis"):
        fis.inject("cache-failover", "freeze_redis_primary", outputs=fis_stack, stack=kit.STACK)
    with pytest.raises(FaultError, match="no FIS counterpart"):
        fis.inject("maintenance-mode", "maintenance_on", outputs=fis_stack, stack=kit.STACK)
    assert not kit.client("fis").list_experiments()["experiments"]  # nothing started


def test_an_experiment_that_does_not_act_in_time_fails_the_injection_and_is_stopped(fis_stack, monkeypatch):
    """An experiment stuck initiating (moto told to hold its state): the injection fails and stop_started, which
    the runner calls whatever becomes of the drill, stops it."""
    state_manager.set_transition(model_name="fis::experiment", transition={"progression": "manual", "times": 1000})
    monkeypatch.setattr(fis, "STARTED_TIMEOUT_S", 0.2)
    try:
        with pytest.raises(FaultError, match="acting not ready"):
            fis.inject("database-failover", "kill_database_primary", outputs=fis_stack, stack=kit.STACK)
        (running,) = kit.client("fis").list_experiments()["experiments"]
        assert fis.stop_started() == [running["id"]]
        assert kit.client("fis").get_experiment(id=running["id"])["experiment"]["state"]["status"] == "stopping"
        assert fis.stop_started() == []  # each once
    finally:
        state_manager.unset_transition(model_name="fis::experiment")
