"""Drills run for real against a local stack of their own: a pass with its report, a refused pre-check, a
failed rollback and a missed objective each give the verdict they must, and the target is left as found; and
the AWS target's drills against a stack whose control plane is moto's (see ``aws_stack``), the EKS ones also
against a fake of its cluster's Kubernetes API (see ``eks_stack``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aws_testkit as kit
import kube_fake
import pytest
import yaml
from moto import mock_aws

import aws_target.target
from aws_target import kubernetes as kube
from aws_target.outputs import OUTPUTS_ENV, STACK_ENV
from drills import catalog, runner, session, targets, topology
from drills.measures import FAULT
from local import faults, probes
from local.layout import PORT_OFFSET_ENV, STATE_ENV
from pynomaly_ops.baselines import DEFAULT_PATH, PATH_ENV
from pynomaly_ops.naming import API_KEY_ENV, DRILL_DB_DSN_ENV
from pynomaly_ops.outputs import (
    CLUSTER_NAME,
    FIS_EXPERIMENT_TEMPLATES,
    LOAD_BALANCER_URL,
    WORKLOAD_NAMESPACE,
    StackOutputs,
)

pytestmark = pytest.mark.integration
PORT_OFFSET = "1500"  # away from a developer's stack and from the local-stack tests' (1000)


def _local(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pynomaly_cli.cli", "local", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, check=False)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[str]:
    state = str(tmp_path_factory.mktemp("drill-stack") / "state")
    env = os.environ | {STATE_ENV: state, PORT_OFFSET_ENV: PORT_OFFSET}
    up = _local(env, "up")
    if up.returncode != 0:
        _local(env, "down", "--purge")
        pytest.fail(f"local up failed:\n{up.stderr}")
    saved = os.environ.get(STATE_ENV)
    os.environ[STATE_ENV] = state  # what the experiments' providers read
    try:
        runner.warm_up(print, state)
        yield state
    finally:
        if saved is None:
            os.environ.pop(STATE_ENV, None)
        else:
            os.environ[STATE_ENV] = saved
        down = _local(env, "down", "--purge")
        assert down.returncode == 0, down.stderr


def _settled(name: str, stack: str) -> None:
    """As `drill run --all` does between drills: the previous test's drill may still have an alarm firing (a CI
    run saw the next pre-check refuse on it)."""
    runner.settle(catalog.get(name), print, stack)


def _run(name: str, stack: str, tmp_path: Path) -> runner.Outcome:
    (outcome,) = runner.run([catalog.get(name)], print, Path(stack), tmp_path / "reports")
    return outcome


def test_instance_loss_passes_with_its_report_and_leaves_the_stack_as_found(stack, tmp_path):
    before = topology.snapshot(stack)
    outcome = _run("instance-loss", stack, tmp_path)
    assert outcome.passed, outcome.summary["problems"] or outcome.summary["objectives"]
    files = {p.name for p in outcome.run_dir.iterdir()}
    assert {"journal.json", "summary.json", "report.md", "report.html", "timeline.png", "requests.jsonl"} <= files
    assert (outcome.run_dir / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((outcome.run_dir / "summary.json").read_text())
    assert [o["met"] for o in summary["objectives"]] == [True, True]
    assert summary["measurements"]["requests"] > 50 and summary["measurements"]["fault_at"] is not None
    assert "PASS" in (outcome.run_dir / "report.md").read_text()
    assert topology.differences(before, topology.snapshot(stack)) == {}


def test_a_broken_steady_state_is_refused_and_nothing_is_injected(stack, tmp_path):
    victim_pid = probes.process_pid("api-1", stack)
    faults.freeze_process("api-2", stack)  # one instance out of service before the drill
    try:
        probes.wait_for_instance_status("api-2", "DOWN", timeout_s=30, state_dir=stack)
        outcome = _run("instance-loss", stack, tmp_path)
    finally:
        faults.resume_process("api-2", stack)
    assert not outcome.passed
    assert any(p.startswith("refused") for p in outcome.summary["problems"]), outcome.summary["problems"]
    assert probes.process_pid("api-1", stack) == victim_pid  # the fault was never injected
    probes.wait_for_instance_status("api-2", "UP", timeout_s=60, state_dir=stack)


def test_a_failed_rollback_fails_the_run_loudly(stack, tmp_path, monkeypatch):
    experiment = json.loads(catalog.get("instance-loss").experiment.read_text())
    experiment["rollbacks"].insert(
        0,
        {
            "type": "action",
            "name": "a-rollback-that-fails",
            "provider": {"type": "python", "module": "local.faults", "func": "kill_process",
                         "arguments": {"name": "no-such-program"}},
        },
    )  # fmt: skip
    copies = tmp_path / "experiments"
    copies.mkdir()
    (copies / "instance-loss.json").write_text(json.dumps(experiment))
    monkeypatch.setattr(catalog, "EXPERIMENTS", copies)
    outcome = _run("instance-loss", stack, tmp_path)
    assert not outcome.passed
    assert "ROLLBACK FAILED: a-rollback-that-fails" in outcome.summary["problems"]
    assert outcome.summary["restored"]  # the other rollbacks still ran, the stack is whole


def test_a_missed_objective_fails_and_the_target_is_still_restored(stack, tmp_path, monkeypatch):
    numbers = yaml.safe_load(DEFAULT_PATH.read_text())
    numbers["recovery"]["instance_loss"]["capacity_back_s"]["local"] = 0.001  # a target no stack can meet
    copy = tmp_path / "baselines.yaml"
    copy.write_text(yaml.safe_dump(numbers))
    monkeypatch.setenv(PATH_ENV, str(copy))
    _settled("instance-loss", stack)
    outcome = _run("instance-loss", stack, tmp_path)
    assert not outcome.passed and outcome.summary["problems"] == []
    missed = [o for o in outcome.summary["objectives"] if not o["met"]]
    assert [o["source"] for o in missed] == ["recovery.instance_loss.capacity_back_s.local"]
    assert outcome.summary["restored"]


def test_the_monthly_drill_passes_every_drill_and_leaves_the_stack_as_found(stack, tmp_path):
    """The README's main job (`drill run --all`) on a stack of its own: every drill's report shows each of its
    objectives met, and the stack ends in the shape it started in."""
    _settled(catalog.DRILLS[0].name, stack)
    before = topology.snapshot(stack)
    outcomes = runner.run(list(catalog.DRILLS), print, Path(stack), tmp_path / "reports", skip_needing_zones=True)
    local = [d.name for d in catalog.DRILLS if "local" in d.targets and not d.needs_zones]  # no zones here
    assert [o.drill for o in outcomes] == local
    missed = {
        o.drill: o.summary["problems"] or [x for x in o.summary["objectives"] if not x["met"]]
        for o in outcomes
        if not o.passed
    }
    assert not missed, missed
    for o in outcomes:
        summary = json.loads((o.run_dir / "summary.json").read_text())
        assert summary["objectives"] and all(x["met"] for x in summary["objectives"]), o.drill
        assert (o.run_dir / "timeline.png").read_bytes()[:4] == b"\x89PNG", o.drill
    assert topology.differences(before, topology.snapshot(stack)) == {}


# --- the same drills against a Pulumi stack on AWS (--target aws), its control plane in moto ---------------------
@pytest.fixture
def aws_stack(stack, tmp_path, monkeypatch) -> Iterator[tuple[runner.Stack, kit.Calls]]:
    """A stack in moto (in-process): the Auto Scaling group, the listener, RDS, ElastiCache, SQS, S3, CloudWatch
    and SSM as the Pulumi program names them. moto serves no traffic, so the outputs' load balancer is this
    module's local stack: what users felt is measured on a real service the AWS faults do not touch, and what
    this proves is the runner's AWS path end to end (target, lock, alarms, faults, waits, shape, rollbacks,
    report) and what it leaves behind. Every AWS call is checked against docs/aws-drill-permissions.json."""
    kit.isolated_credentials(monkeypatch, tmp_path)
    for var in (targets.TARGET_ENV, targets.VIA_ENV, API_KEY_ENV):  # the runner sets them: restored after the test
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(aws_target.target, "POLL_INTERVAL_S", 0.5)
    local = StackOutputs.from_json_file(Path(stack) / "outputs.json")
    monkeypatch.setenv(API_KEY_ENV, local.api_key or "")
    calls = kit.Calls().install(monkeypatch)
    with mock_aws():
        document = kit.build_stack() | {LOAD_BALANCER_URL: local.load_balancer_url}
        path = kit.write_outputs(tmp_path / "outputs.json", document)
        yield runner.Stack(kit.STACK, Path(path)), calls
    calls.assert_allowed()


def test_the_aws_drills_run_against_a_stack_in_moto_and_leave_it_as_found(stack, aws_stack, tmp_path):
    target, calls = aws_stack
    asg = kit.client("autoscaling")
    group = kit.name("fleet", "asg")

    def fleet() -> tuple[set[str], int]:
        g = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]
        return {i["InstanceId"] for i in g["Instances"] if i["LifecycleState"] == "InService"}, g["DesiredCapacity"]

    before, _ = fleet()
    names = ["instance-loss", "object-restore", "traffic-spike"]
    outcomes = runner.run([catalog.get(n) for n in names], print, reports=tmp_path / "reports", stack=target)
    failed = {o.drill: o.summary["problems"] or o.summary["objectives"] for o in outcomes if not o.passed}
    assert [o.drill for o in outcomes] == names and not failed, failed
    for o in outcomes:
        summary = json.loads((o.run_dir / "summary.json").read_text())
        assert summary["target"] == f"stack {kit.STACK} on AWS" and summary["restored"], o.drill
        assert summary["topology_before"]["instances_up"] == 3 and "redis_roles" in summary["topology_before"]
    loss = json.loads((outcomes[0].run_dir / "summary.json").read_text())
    assert loss["objectives"][1]["source"] == "recovery.instance_loss.capacity_back_s.aws"
    lost = next(e["detail"]["pid"] for e in loss["measurements"]["events"] if e["event"] == "fault injected")
    after, desired = fleet()
    assert lost in before and lost not in after and len(after) == 3 and desired == 3  # replaced; scaled 6 and back
    ops = calls.operations()
    assert {("autoscaling", "TerminateInstanceInAutoScalingGroup"), ("autoscaling", "SetDesiredCapacity"),
            ("ssm", "PutParameter"), ("ssm", "DeleteParameter"), ("cloudwatch", "DescribeAlarms"),
            ("s3", "CopyObject")} <= ops  # fmt: skip
    with pytest.raises(kit.client("ssm").exceptions.ParameterNotFound):  # the lock released
        kit.client("ssm").get_parameter(Name=f"/pynomaly/{kit.STACK}/drill-lock")
    versions = kit.client("s3").list_object_versions(Bucket=_artifacts(), Prefix="drills/")
    assert not versions.get("Versions") and not versions.get("DeleteMarkers")  # the drill's objects removed


def test_on_a_stack_the_drills_writes_go_through_the_writer_it_is_given(stack, aws_stack, tmp_path, monkeypatch):
    """database-failover's writer on AWS (RTO and RPO through the writer endpoint): moto has no server behind
    its endpoint, so $PYNOMALY_DRILL_DB_DSN names a real PostgreSQL, the local stack's writer, in its place; the
    session on the stack writes through it, acknowledged and none lost, and leaves the stack's lock as found."""
    target, _ = aws_stack
    local = StackOutputs.from_json_file(Path(stack) / "outputs.json")
    assert local.db_writer_dsn and target.outputs_file is not None
    env = {targets.TARGET_ENV: targets.AWS, STACK_ENV: kit.STACK, OUTPUTS_ENV: str(target.outputs_file),
           DRILL_DB_DSN_ENV: local.db_writer_dsn, session.RUN_DIR_ENV: str(tmp_path / "run")}  # fmt: skip
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert targets.outputs().db_writer_dsn == local.db_writer_dsn
    session.start("database-failover", writes=True, max_duration_s=30)  # returns once 50 writes are acknowledged
    session.finish(observe_s=0)
    writes = json.loads((tmp_path / "run" / "session.json").read_text())["writes"]
    assert writes["acknowledged"] >= 50 and writes["lost_writes"] == 0, writes
    with pytest.raises(kit.client("ssm").exceptions.ParameterNotFound):
        kit.client("ssm").get_parameter(Name=f"/pynomaly/{kit.STACK}/drill-lock")


def _artifacts() -> str:
    return f"{kit.name('storage', 'artifacts')}-{kit.ACCOUNT}"


def test_production_needs_confirming_and_a_held_lock_refuses_the_drill(stack, aws_stack, tmp_path):
    target, _ = aws_stack
    prod = runner.Stack("prod", target.outputs_file)
    with pytest.raises(targets.DrillError, match="--confirm-production"):
        runner.run([catalog.get("instance-loss")], print, reports=tmp_path / "r", stack=prod)
    ssm = kit.client("ssm")
    held = f"/pynomaly/{kit.STACK}/drill-lock"
    ssm.put_parameter(Name=held, Value='{"drill": "cache-failover", "host": "elsewhere"}', Type="String")
    asg = kit.client("autoscaling")
    group = kit.name("fleet", "asg")
    ids = [i["InstanceId"] for i in asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])
           ["AutoScalingGroups"][0]["Instances"]]  # fmt: skip
    (outcome,) = runner.run([catalog.get("instance-loss")], print, reports=tmp_path / "r", stack=target)
    assert not outcome.passed and outcome.summary["problems"][0].startswith("steps failed: start-measuring")
    assert "elsewhere" in (outcome.run_dir / "chaostoolkit.log").read_text()  # who holds it, said
    again = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]["Instances"]
    assert [i["InstanceId"] for i in again] == ids  # nothing was injected
    assert ssm.get_parameter(Name=held)["Parameter"]["Value"].startswith('{"drill": "cache-failover"')  # not ours


def test_an_eks_drill_is_refused_on_the_local_target_before_any_stack_is_opened(tmp_path, monkeypatch):
    monkeypatch.delenv(targets.TARGET_ENV, raising=False)  # the runner sets it: restored after the test
    with pytest.raises(targets.DrillError, match=r"pod-loss: no local implementation \(its targets: aws\)"):
        runner.run([catalog.get("pod-loss"), catalog.get("instance-loss")], print, tmp_path / "state")
    assert not (tmp_path / "state").exists()


def test_an_eks_drill_is_refused_on_a_stack_without_a_cluster(stack, aws_stack, tmp_path):
    target, calls = aws_stack
    with pytest.raises(targets.DrillError, match=f"node-drain: the stack has no {CLUSTER_NAME}"):
        runner.run([catalog.get("node-drain")], print, reports=tmp_path / "r", stack=target)
    assert not (tmp_path / "r").exists() and not calls.seen  # refused before the lock or any fault


# --- the EKS drills: the stack in moto, its cluster a fake of the Kubernetes API ---------------------------------
@pytest.fixture
def eks_stack(aws_stack, tmp_path, monkeypatch) -> Iterator[tuple[runner.Stack, kube_fake.FakeCluster]]:
    """``aws_stack`` with EKS: its outputs name the cluster and the workload's namespace, and the Kubernetes client
    reaches a fake of the cluster's API serving the workload as infra/workload.py deploys it (tests/kube_fake.py)
    through $PYNOMALY_KUBECONFIG, as moto's EKS cluster has an endpoint nothing answers at. Its replacement pods
    are ready and its deleted pods gone within a second: the drills' waits judge, not the fake's pace."""
    target, _ = aws_stack
    assert target.outputs_file is not None
    document = json.loads(target.outputs_file.read_text())
    eks = {CLUSTER_NAME: kit.name("cluster", "eks"), WORKLOAD_NAMESPACE: kube_fake.NAMESPACE}
    kit.write_outputs(target.outputs_file, kit.outputs_document(document | eks))
    kubeconfig = tmp_path / "kubeconfig"
    with kube_fake.serving(kubeconfig, ready_after_s=0.5, terminating_s=0.3) as fake:
        monkeypatch.setenv(kube.KUBECONFIG_ENV, str(kubeconfig))
        yield target, fake


def _fault(summary: dict) -> dict:
    return next(e["detail"] for e in summary["measurements"]["events"] if e["event"] == FAULT)


def test_the_eks_drills_pod_loss_and_node_drain_run_against_a_stack_and_its_cluster(stack, eks_stack, tmp_path):
    target, fake = eks_stack
    active = kube.deployment_name(kube_fake.ACTIVE)
    before = fake.pods_of(active)
    names = ["pod-loss", "node-drain"]
    outcomes = runner.run([catalog.get(n) for n in names], print, reports=tmp_path / "reports", stack=target)
    failed = {o.drill: o.summary["problems"] or o.summary["objectives"] for o in outcomes if not o.passed}
    assert [o.drill for o in outcomes] == names and not failed, failed
    summaries = {o.drill: json.loads((o.run_dir / "summary.json").read_text()) for o in outcomes}
    for name, summary in summaries.items():
        assert summary["target"] == f"stack {kit.STACK} on AWS" and summary["restored"], name
        assert len(summary["objectives"]) == 2 and all(o["met"] for o in summary["objectives"]), name
        shape = summary["topology_before"]
        assert shape["api_pods_ready"] is True and shape["nodes_schedulable"] is True, name

    (deleted,) = _fault(summaries["pod-loss"])["deleted"]  # one pod of the active colour's Deployment
    after = fake.pods_of(active)
    assert deleted in before and deleted not in after and len(after) == len(before) == 3  # replaced
    assert deleted not in {name for _, name in fake.pods}  # gone, not terminating

    drained = _fault(summaries["node-drain"])
    node, moved = drained["node"], drained["api_pods"]
    assert moved and not set(moved) & set(fake.pods_of(active))  # it evicted API pods of the active colour...
    assert not set(fake.pods_of(active)) & set(fake.pods_on(node))  # ...replaced elsewhere
    journal = json.loads((outcomes[1].run_dir / "journal.json").read_text())
    rollback = next(r for r in journal["rollbacks"] if r["activity"]["name"] == "nodes-uncordoned")
    assert rollback["status"] == "succeeded" and rollback["output"]["uncordoned"] == [node]
    assert not fake.cordoned(node) and kube.CORDONED_BY_DRILL not in fake.nodes[node]["metadata"]["annotations"]
    assert fake.cordoned("node-d")  # cordoned by someone else: left alone

    with pytest.raises(kit.client("ssm").exceptions.ParameterNotFound):  # the lock released
        kit.client("ssm").get_parameter(Name=f"/pynomaly/{kit.STACK}/drill-lock")


def test_via_fis_the_stacks_templates_break_it_and_the_drills_measure_the_same(stack, aws_stack, eks_stack, tmp_path):
    """``--via fis``: the runner starts the stack's own templates, not the fault library's calls. moto runs no FIS
    action, so the test does what each template's action would, once its experiment starts: terminate one of
    the group's instances (aws:ec2:terminate-instances) and delete one API pod (aws:eks:pod-delete); the drills
    must then name what was hit and pass as without FIS."""
    target, fake = eks_stack
    assert target.outputs_file is not None
    fis, asg = kit.client("fis"), kit.client("autoscaling")  # made here: boto3's default session is not thread-safe
    group = kit.name("fleet", "asg")
    templates = {"instance-loss": kit.instance_loss_template(), "pod-loss": kit.fis_template(
        "aws:eks:pod-delete", "aws:eks:pod", {"parameters": {"clusterIdentifier": kit.name("cluster", "eks"),
        "namespace": kube_fake.NAMESPACE, "selectorType": "labelSelector", "selectorValue": "app=pynomaly"},
        "selectionMode": "COUNT(1)"})}  # fmt: skip
    document = json.loads(target.outputs_file.read_text()) | {FIS_EXPERIMENT_TEMPLATES: templates}
    via_fis = runner.Stack(kit.STACK, Path(kit.write_outputs(tmp_path / "fis.json", document)), via=targets.VIA_FIS)
    active = kube.deployment_name(kube_fake.ACTIVE)
    hit: dict[str, str] = {}

    def act_as_fis() -> None:
        started: set[str] = set()
        deadline = time.monotonic() + 600  # the two drills' length, with room: a runner that never starts one fails
        while len(started) < len(templates) and time.monotonic() < deadline:
            for e in fis.list_experiments()["experiments"]:
                if e["id"] in started:
                    continue
                started.add(e["id"])
                if e["experimentTemplateId"] == templates["instance-loss"]:
                    g = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]
                    hit["instance-loss"] = sorted(i["InstanceId"] for i in g["Instances"])[0]
                    asg.terminate_instance_in_auto_scaling_group(
                        InstanceId=hit["instance-loss"], ShouldDecrementDesiredCapacity=False
                    )
                else:
                    hit["pod-loss"] = fake.pods_of(active)[0]
                    fake.delete_pod(kube_fake.NAMESPACE, hit["pod-loss"])
            time.sleep(0.05)

    fis_acts = threading.Thread(target=act_as_fis, daemon=True)
    fis_acts.start()
    names = ["instance-loss", "pod-loss", "maintenance-mode"]
    with pytest.raises(targets.DrillError, match="maintenance-mode: stack drill exports no FIS template"):
        runner.run([catalog.get(n) for n in names], print, reports=tmp_path / "refused", stack=via_fis)
    outcomes = runner.run([catalog.get(n) for n in names[:2]], print, reports=tmp_path / "reports", stack=via_fis)
    fis_acts.join(5)
    failed = {o.drill: o.summary["problems"] or o.summary["objectives"] for o in outcomes if not o.passed}
    assert [o.drill for o in outcomes] == names[:2] and not failed, failed
    summaries = {o.drill: json.loads((o.run_dir / "summary.json").read_text()) for o in outcomes}
    assert all(s["target"] == f"stack {kit.STACK} on AWS via FIS" and s["restored"] for s in summaries.values())
    loss, pods = _fault(summaries["instance-loss"]), _fault(summaries["pod-loss"])
    assert (loss["via"], loss["template"], loss["pid"]) == ("fis", templates["instance-loss"], hit["instance-loss"])
    assert (pods["template"], pods["deleted"]) == (templates["pod-loss"], [hit["pod-loss"]])
    for name, fault in (("instance-loss", loss), ("pod-loss", pods)):
        experiment = fis.get_experiment(id=fault["experiment"])["experiment"]
        assert experiment["tags"] == {"pynomaly:drill": name, "Environment": kit.STACK}
    ops = aws_stack[1].operations()
    assert {("fis", "StartExperiment"), ("fis", "GetExperiment"), ("fis", "ListExperimentResolvedTargets")} <= ops
    assert ("autoscaling", "TerminateInstanceInAutoScalingGroup") not in ops  # FIS's action did it, not the library
