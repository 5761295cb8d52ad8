"""The runner's verdict from Chaos Toolkit journals and records, without a stack: a broken steady state is a
refusal, a failed rollback is loud, and a drill passes only when everything held."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import chaoslib.experiment
import pytest
from drill_testkit import T0, event, requests, session, write_run

from drills import catalog, runner, topology
from drills.measures import FAULT

HEALTHY = {
    "instances": 3,
    "instances_up": 3,
    "database_ready": True,
    "redis_roles": ["master", "slave"],
    "queues": {"jobs": 0, "dead_letters": 0},
}
STEADY = ["health-answers-200", "topology-intact", "no-service-alarm-firing", "error-rate-and-p95-under-warning"]


def _run(name: str, status: str = "succeeded") -> dict[str, Any]:
    return {"activity": {"type": "action", "name": name}, "status": status, "output": None}


def _journal(
    steady: list[tuple[str, bool]] | None = None,
    run: list[dict[str, Any]] | None = None,
    rollbacks: list[dict[str, Any]] | None = None,
    status: str = "completed",
) -> dict[str, Any]:
    """The parts of a chaoslib journal the runner reads."""
    probes = [{**_run(n), "tolerance_met": met} for n, met in (steady or [(n, True) for n in STEADY])]
    met = all(p["tolerance_met"] for p in probes)
    return {
        "status": status,
        "deviated": False,
        "steady_states": {"before": {"steady_state_met": met, "probes": probes}, "after": None, "during": []},
        "run": [_run("start-measuring"), _run("kill-one-instance"), _run("stop-measuring")] if run is None else run,
        "rollbacks": [_run("instance-running"), _run("stop-measuring-if-still-running")]
        if rollbacks is None
        else rollbacks,
    }


@pytest.fixture
def measured(tmp_path) -> Path:
    """A run directory with the session's records, as after a drill that measured."""
    return write_run(tmp_path / "run", requests(30), _data())


def test_all_good_is_no_problem(measured):
    assert runner._problems(_journal(), measured) == []


def test_a_broken_steady_state_before_the_fault_is_a_refusal(tmp_path):
    # chaoslib stops at the first probe out of tolerance: the ones after it never ran.
    journal = _journal(steady=[("health-answers-200", True), ("topology-intact", False)], run=[], status="failed")
    problems = runner._problems(journal, tmp_path)
    assert problems == ["refused: the steady state was broken before the fault (topology-intact)"]


def test_no_steady_state_recorded_is_a_refusal_too(tmp_path):
    journal = {"status": "failed", "steady_states": {"before": None}, "run": [], "rollbacks": []}
    assert runner._problems(journal, tmp_path) == ["refused: the steady state was broken before the fault (unknown)"]


def test_a_failed_rollback_is_loud(measured):
    journal = _journal(rollbacks=[_run("instance-running", "failed"), _run("stop-measuring-if-still-running")])
    assert runner._problems(journal, measured) == ["ROLLBACK FAILED: instance-running"]


def test_failed_steps_and_an_interrupted_experiment_are_problems(measured):
    journal = _journal(run=[_run("start-measuring"), _run("kill-one-instance", "failed")], status="interrupted")
    problems = runner._problems(journal, measured)
    assert problems == ["steps failed: kill-one-instance", "experiment interrupted"]


def test_a_steady_state_met_without_records_is_a_problem(tmp_path):
    assert runner._problems(_journal(), tmp_path) == ["no measurement was recorded"]


# --- run_one, with Chaos Toolkit and the target stood in for ---------------------------------------------
def _fake_chaos(monkeypatch, journal: dict[str, Any], data: dict[str, Any] | None, failing=lambda s: False):
    """run_experiment replaced by one that leaves ``data`` as the session's records and returns ``journal``."""
    experiments: list[dict[str, Any]] = []

    def run_experiment(experiment, settings=None, event_handlers=None, **_):
        experiments.append(experiment)
        assert settings == {"runtime": {"rollbacks": {"strategy": "always"}}}  # rollbacks whatever happens
        if data is not None:
            run_dir = Path(runner.os.environ[runner.session.RUN_DIR_ENV])
            write_run(run_dir, requests(30, failing=failing), data)
        return journal

    monkeypatch.setattr(chaoslib.experiment, "run_experiment", run_experiment)
    return experiments


def _data(**kwargs: Any) -> dict[str, Any]:
    events = [event("measurement started", 0), event(FAULT, 10, {"fault": "kill_process"})]
    events += [event("capacity restored", 14, {"name": "api-1", "seconds": 4.0}), event("measurement stopped", 30)]
    return session(events, **kwargs)


@pytest.fixture
def target(monkeypatch):
    """The topology the runner reads before and after: ``after`` may be changed by a test."""
    shapes = {"before": dict(HEALTHY), "after": dict(HEALTHY)}
    monkeypatch.setattr(topology, "snapshot", lambda state_dir=None: dict(shapes["before"]))
    monkeypatch.setattr(
        topology, "wait_until_restored", lambda before, timeout_s, state_dir=None: (shapes["after"], 0.0)
    )
    # run_one sets it in os.environ: set here first, so that monkeypatch puts back what was there before.
    monkeypatch.setenv(runner.session.RUN_DIR_ENV, "set by run_one")
    return shapes


def test_run_one_passes_when_everything_held(tmp_path, monkeypatch, target):
    experiments = _fake_chaos(monkeypatch, _journal(), _data())
    outcome = runner.run_one(catalog.get("instance-loss"), tmp_path, lambda m: None)
    assert experiments[0]["extensions"][0]["drill"] == "instance-loss"
    assert outcome.passed, outcome.summary["problems"] or outcome.summary["objectives"]
    assert [o["met"] for o in outcome.summary["objectives"]] == [True, True]
    assert outcome.run_dir == tmp_path / "instance-loss"
    files = {p.name for p in outcome.run_dir.iterdir()}
    assert {"journal.json", "summary.json", "report.md", "report.html", "timeline.png"} <= files
    assert json.loads((outcome.run_dir / "summary.json").read_text())["passed"] is True


def test_run_one_fails_a_missed_objective(tmp_path, monkeypatch, target):
    _fake_chaos(monkeypatch, _journal(), _data(), failing=lambda s: 10 <= s < 12)  # 40 of 600: 6.7 %
    outcome = runner.run_one(catalog.get("instance-loss"), tmp_path, lambda m: None)
    assert not outcome.passed and outcome.summary["problems"] == []
    missed = [o["source"] for o in outcome.summary["objectives"] if not o["met"]]
    assert missed == ["recovery.instance_loss.max_error_rate"]


def test_run_one_fails_an_aborted_run(tmp_path, monkeypatch, target):
    _fake_chaos(monkeypatch, _journal(status="interrupted"), _data(aborted_at=T0 + 25))
    outcome = runner.run_one(catalog.get("instance-loss"), tmp_path, lambda m: None)
    assert not outcome.passed
    assert any(p.startswith("aborted: the critical error rate held") for p in outcome.summary["problems"])


def test_run_one_fails_a_target_not_left_as_found(tmp_path, monkeypatch, target):
    target["after"] = {**HEALTHY, "instances_up": 2}
    _fake_chaos(monkeypatch, _journal(), _data())
    outcome = runner.run_one(catalog.get("instance-loss"), tmp_path, lambda m: None)
    assert not outcome.passed and all(o["met"] for o in outcome.summary["objectives"])
    assert outcome.summary["restored"] is False
    assert outcome.summary["topology_differences"] == {"instances_up": {"before": 3, "after": 2}}
    assert "NOT restored" in (outcome.run_dir / "report.md").read_text()


def test_run_one_fails_a_refused_drill_without_objectives(tmp_path, monkeypatch, target):
    journal = _journal(steady=[("health-answers-200", False)], run=[], status="failed")
    _fake_chaos(monkeypatch, journal, None)  # refused: nothing measured
    outcome = runner.run_one(catalog.get("instance-loss"), tmp_path, lambda m: None)
    assert not outcome.passed
    assert outcome.summary["objectives"] == [] and outcome.summary["measurements"] is None
    assert outcome.summary["problems"][0].startswith("refused")
    assert "FAIL (refused" in (outcome.run_dir / "report.md").read_text()
