"""Drills run for real against a local stack of their own: a pass with its report, a refused pre-check, a
failed rollback and a missed objective each give the verdict they must, and the target is left as found."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from drills import catalog, runner, topology
from local import faults, probes
from local.layout import PORT_OFFSET_ENV, STATE_ENV
from pynomaly_ops.baselines import DEFAULT_PATH, PATH_ENV

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
    numbers["recovery"]["instance_loss"]["capacity_back_s"] = 0.001  # a target no stack can meet
    copy = tmp_path / "baselines.yaml"
    copy.write_text(yaml.safe_dump(numbers))
    monkeypatch.setenv(PATH_ENV, str(copy))
    _settled("instance-loss", stack)
    outcome = _run("instance-loss", stack, tmp_path)
    assert not outcome.passed and outcome.summary["problems"] == []
    missed = [o for o in outcome.summary["objectives"] if not o["met"]]
    assert [o["source"] for o in missed] == ["recovery.instance_loss.capacity_back_s"]
    assert outcome.summary["restored"]


def test_the_monthly_drill_passes_every_drill_and_leaves_the_stack_as_found(stack, tmp_path):
    """The README's main job (`drill run --all`) on a stack of its own: every drill's report shows each of its
    objectives met, and the stack ends in the shape it started in."""
    _settled(catalog.DRILLS[0].name, stack)
    before = topology.snapshot(stack)
    outcomes = runner.run(list(catalog.DRILLS), print, Path(stack), tmp_path / "reports", skip_needing_zones=True)
    assert [o.drill for o in outcomes] == [d.name for d in catalog.DRILLS if not d.needs_zones]  # no zones here
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
