"""Run drills against the local stack or a stack on AWS (drills/targets.py): pre-check, experiment, recovery,
rollbacks, verdict, report.

Each drill's experiment runs in this process through chaoslib (the library behind ``chaos run``), with
rollbacks played whatever happens (Chaos Toolkit plays them on a failed action, Ctrl-C and SIGTERM too).
The verdict is this runner's, never Chaos Toolkit's exit status: a drill passes only when the steady state
held before the fault, every rollback succeeded, no abort fired, every objective was met and the topology
is back to what it was before.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drills import report, session, targets, topology
from drills.catalog import Drill
from drills.measures import measure
from local.layout import STATE_ENV, state_dir_from
from local.stack import open_stack
from pynomaly_ops.baselines import load

RESTORE_TIMEOUT_S = 120  # how long the topology may take to settle after the rollbacks
Say = Callable[[str], None]


@dataclass(frozen=True)
class Outcome:
    drill: str
    passed: bool
    run_dir: Path
    summary: dict[str, Any]


def _progress(say: Say) -> Any:
    from chaoslib.run import RunEventHandler

    class Progress(RunEventHandler):
        def running(self, experiment: Any, journal: Any, *args: Any) -> None:
            say("steady state: checking before the fault")

        def start_method(self, experiment: Any) -> None:
            say("method: measuring, injecting the fault, awaiting recovery")

        def start_rollbacks(self, experiment: Any) -> None:
            say("rollbacks: undoing the fault")

    return Progress()


@contextmanager
def _chaos_log(run_dir: Path) -> Iterator[None]:
    logger = logging.getLogger("chaostoolkit")
    handler = logging.FileHandler(run_dir / "chaostoolkit.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()


@contextmanager
def _fis_stopped_after(say: Say) -> Iterator[None]:
    """Via FIS: whatever becomes of the drill, no experiment it started is left acting (an AZ power
    interruption lasts its duration)."""
    try:
        yield
    finally:  # the experiments' rollbacks stop them first; this is for a run whose rollbacks never ran
        if stopped := targets.stop_injected():
            say(f"stopped the FIS experiments still running: {', '.join(stopped)}")


def _problems(journal: dict[str, Any], run_dir: Path) -> list[str]:
    problems = []
    before = (journal.get("steady_states") or {}).get("before") or {}
    if not before.get("steady_state_met", False):
        broken = [p["activity"]["name"] for p in before.get("probes", []) if not p.get("tolerance_met", False)]
        problems.append(f"refused: the steady state was broken before the fault ({', '.join(broken) or 'unknown'})")
    failed_rollbacks = [r["activity"]["name"] for r in journal.get("rollbacks", []) if r.get("status") != "succeeded"]
    if failed_rollbacks:
        problems.append(f"ROLLBACK FAILED: {', '.join(failed_rollbacks)}")
    failed_steps = [r["activity"]["name"] for r in journal.get("run", []) if r.get("status") != "succeeded"]
    if failed_steps:
        problems.append(f"steps failed: {', '.join(failed_steps)}")
    if journal.get("status") in ("interrupted", "aborted"):
        problems.append(f"experiment {journal['status']}")
    if before.get("steady_state_met") and not (run_dir / "session.json").exists():
        problems.append("no measurement was recorded")
    return problems


def run_one(drill: Drill, runs_root: Path, say: Say, state_dir: str | None = None) -> Outcome:
    from chaoslib.experiment import ensure_experiment_is_valid, run_experiment
    from chaoslib.loader import load_experiment

    b = load()
    run_dir = runs_root / drill.name
    repeat = 1
    while run_dir.exists():  # the same drill again in one run (a benchmark's repeats): a folder each
        repeat += 1
        run_dir = runs_root / f"{drill.name}-{repeat}"
    run_dir.mkdir(parents=True)
    os.environ[session.RUN_DIR_ENV] = str(run_dir)
    before = topology.snapshot(state_dir)
    started = time.time()
    experiment = load_experiment(str(drill.experiment))
    ensure_experiment_is_valid(experiment)
    with _chaos_log(run_dir), _fis_stopped_after(say):
        journal = run_experiment(
            experiment,
            settings={"runtime": {"rollbacks": {"strategy": "always"}}},
            event_handlers=[_progress(say)],
        )
    (run_dir / "journal.json").write_text(json.dumps(journal, indent=2, default=str) + "\n")
    say("checking the target is left as it was found")
    after, waited = topology.wait_until_restored(before, RESTORE_TIMEOUT_S, state_dir)
    problems = _problems(journal, run_dir)
    measurements = measure(run_dir, b) if (run_dir / "session.json").exists() else None
    objectives = drill.verdict(b, measurements, targets.current()) if measurements else []
    if measurements and measurements["aborted"]:
        problems.append(f"aborted: {measurements.get('aborted_because') or 'the abort guard tripped'}")
    differences = topology.differences(before, after)
    passed = not problems and not differences and bool(objectives) and all(o["met"] for o in objectives)
    result = report.summary(
        drill,
        {
            "passed": passed,
            "problems": problems,
            "started": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
            "duration_s": time.time() - started,
            "objectives": objectives,
            "measurements": measurements,
            "topology_before": before,
            "topology_after": after,
            "topology_differences": differences,
            "restored": not differences,
            "restore_wait_s": waited,
            "chaos_status": journal.get("status"),
            "target": targets.describe(),
        },
    )
    report.write(run_dir, result, b)
    return Outcome(drill.name, passed, run_dir, result)


WARM_UP_TIMEOUT_S = 120
# Samples in a row within the warning levels that make a stack warm: one can be lucky. A CI run saw a stack pass
# its first sample seconds after `up` and the pre-check's next one, five seconds later, stall (p95 768 ms).
WARM_SAMPLES = 2
# The longest a local alarm outlives its cause: the rules' rate window (pynomaly_ops.metrics.RATE_WINDOW, 5 min)
# plus their `for` (local.rules.DEFAULT_FOR, 1 min). With the drills' load flowing it clears much sooner.
SETTLE_TIMEOUT_S = 360


def precheck_alarms(drill: Drill) -> list[str]:
    """The catalogue alarms the drill's steady state requires silent (its ``no_alarm_firing`` probe)."""
    experiment = json.loads(drill.experiment.read_text())
    probes_ = experiment.get("steady-state-hypothesis", {}).get("probes", [])
    silent = [p["provider"] for p in probes_ if p["provider"].get("func") == "no_alarm_firing"]
    return [k for provider in silent for k in provider["arguments"]["keys"]]


def settle(drill: Drill, say: Say, state_dir: str | None = None) -> float:
    """Before the next drill: wait, with a deadline, until none of the alarms its pre-check requires silent
    is pending or firing, with the drills' load flowing (as user traffic flows after an incident). An alarm
    a drill raised is its aftermath, not a broken steady state; if it outlives the deadline the pre-check
    refuses and says why. Returns the seconds waited."""
    from drills.steps import active_alarms, within_warning

    keys, started = precheck_alarms(drill), time.monotonic()
    while active := active_alarms(keys, state_dir):
        waited = time.monotonic() - started
        if waited > SETTLE_TIMEOUT_S:
            say(f"alarms still active after {waited:.0f}s: {active}; the pre-check will judge")
            break
        say(f"waiting for the last drill's alarms to clear: {', '.join(f'{k} ({v})' for k, v in active.items())}")
        within_warning(5, state_dir)  # five seconds of the drills' load: the polling interval
    return time.monotonic() - started


def warm_up(say: Say, state_dir: str | None = None) -> None:
    """A stack just started (by the runner or by `local up`) answers its first detections slowly: each
    instance loads its libraries on its first requests. Send the drills' load until WARM_SAMPLES samples in a
    row are within the warning levels, as traffic warms a new production instance, so the pre-check judges the
    platform and not a cold start; a warm stack passes the first samples."""
    from drills.steps import within_warning

    deadline, in_a_row = time.monotonic() + WARM_UP_TIMEOUT_S, 0
    while in_a_row < WARM_SAMPLES:
        sample = within_warning(5, state_dir)
        in_a_row = in_a_row + 1 if sample["ok"] else 0
        if not sample["ok"] and time.monotonic() > deadline:
            say(f"still outside the warning levels after warming up: {sample}")
            return
    say(f"warmed up: p95 {sample['p95_ms']:.0f} ms, errors {sample['error_rate_percent']:.1f} %")


@dataclass(frozen=True)
class Stack:
    """A Pulumi stack on AWS as the drills' target: its name, and its saved outputs if not read through the CLI."""

    name: str
    outputs_file: Path | None = None
    confirm_production: bool = False
    via: str = targets.VIA_API  # or VIA_FIS: the faults through the stack's FIS experiment templates


def _aws_target(stack: Stack, drills: list[Drill], say: Say, names_given: bool) -> list[Drill]:
    """Point the experiments at ``stack`` (drills/targets.py reads the environment) and keep the drills it can
    run: a drill without an AWS implementation, or an EKS drill on a stack without EKS, is refused when named
    and skipped (and said so) in the monthly ``--all``."""
    from aws_target.outputs import OUTPUTS_ENV, STACK_ENV

    if stack.name == targets.PRODUCTION and not stack.confirm_production:
        raise targets.DrillError(
            f"stack {stack.name} is production: a drill there breaks what users use. Pass --confirm-production "
            "if you mean it (runbook 002: drills in production are announced and staffed)"
        )
    os.environ[targets.TARGET_ENV] = targets.AWS
    os.environ[targets.VIA_ENV] = stack.via
    os.environ[STACK_ENV] = stack.name
    if stack.outputs_file is not None:
        os.environ[OUTPUTS_ENV] = str(stack.outputs_file)
    else:
        os.environ.pop(OUTPUTS_ENV, None)
    outputs = targets.outputs()  # the stack named and readable, with a key and a load balancer to load
    unfit = {d.name: why for d in drills if (why := d.unfit_for(targets.AWS, outputs.model_dump()))}
    if stack.via == targets.VIA_FIS:
        have = outputs.fis_experiment_templates
        why = f"stack {stack.name} exports no FIS template for it (it has {', '.join(have) or 'none'}; fis.enabled)"
        unfit = {d.name: why for d in drills if d.name not in have} | unfit  # the first reason stands
    return _runnable(drills, unfit, say, names_given)


def _runnable(drills: list[Drill], unfit: dict[str, str], say: Say, names_given: bool) -> list[Drill]:
    """The drills without a reason (``unfit``) not to run; one with is refused when named (DrillError),
    skipped and said so in the monthly ``--all``."""
    if unfit and names_given:
        raise targets.DrillError("; ".join(f"{name}: {why}" for name, why in unfit.items()))
    for name, why in unfit.items():
        say(f"SKIPPED {name}: {why}")
    return [d for d in drills if d.name not in unfit]


def run(
    drills: list[Drill],
    say: Say,
    state_dir: Path | None = None,
    reports: Path | None = None,
    skip_needing_zones: bool = False,
    stack: Stack | None = None,
) -> list[Outcome]:
    """Run ``drills`` one after the other against the local stack, bringing it up first if it is down and
    taking it down again afterwards (the target is left as it was found). A drill that needs zones (an AZ
    drill) needs a stack brought up with them: one is created so if none exists, and an existing stack
    without zones is refused (StackError), or, with ``skip_needing_zones`` (the monthly ``--all``), the
    drill is skipped and said so. With ``stack``, against that Pulumi stack on AWS instead (DrillError if it
    cannot be: production unconfirmed, outputs unreadable, a drill it cannot run)."""
    if stack is not None:
        drills = _aws_target(stack, drills, say, names_given=not skip_needing_zones)
        return _run_drills(drills, say, None, reports)
    os.environ[targets.TARGET_ENV] = targets.LOCAL
    os.environ.pop(targets.VIA_ENV, None)
    unfit = {d.name: why for d in drills if (why := d.unfit_for(targets.LOCAL, {}))}
    drills = _runnable(drills, unfit, say, names_given=not skip_needing_zones)
    root = state_dir_from(state_dir)
    os.environ[STATE_ENV] = str(root)  # what the experiments' providers read
    zonal = [d.name for d in drills if d.needs_zones]
    local_stack = open_stack(root, say, create=True, zoned=True if zonal and not skip_needing_zones else None)
    if zonal and not local_stack.layout.zoned:
        say(f"SKIPPED {', '.join(zonal)}: they need zones in network namespaces (`local up --zones`, as root)")
        drills = [d for d in drills if not d.needs_zones]
    was_running = local_stack.supervisor.running()
    if not was_running:
        say("the local stack is down: bringing it up for the drills")
        local_stack.up()
    try:
        return _run_drills(drills, say, str(root), reports)
    finally:
        if not was_running:
            say("taking the local stack down again (it was down before the drills)")
            local_stack.down()


def _run_drills(drills: list[Drill], say: Say, state_dir: str | None, reports: Path | None) -> list[Outcome]:
    """Warm the target up, then each drill, settling between them; the suite's index in its reports folder."""
    say(f"target: {targets.describe()}")
    warm_up(say, state_dir)  # one sample when the stack is warm already; a just-started one is warmed
    runs_root = (reports or Path("reports") / "drills") / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    runs_root.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    for drill in drills:
        if outcomes and outcomes[-1].summary["restored"]:  # a target left broken is the pre-check's to refuse
            settle(drill, say, state_dir)
        say(f"drill {drill.name}: {drill.procedure}")
        outcomes.append(run_one(drill, runs_root, say, state_dir))
        say(f"drill {drill.name}: {'PASS' if outcomes[-1].passed else 'FAIL'} ({outcomes[-1].run_dir})")
    (runs_root / "suite.json").write_text(
        json.dumps([{"drill": o.drill, "passed": o.passed, "run_dir": str(o.run_dir)} for o in outcomes], indent=2)
    )
    return outcomes
