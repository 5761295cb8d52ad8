"""The steps a drill's experiment is made of, as Chaos Toolkit ``python`` providers (module ``drills.steps``).

Faults and waits are the fault library's, called by name in the target's modules (drills/targets.py:
local/faults.py and local/probes.py, or aws_target/ for a stack on AWS), so every experiment injects and
observes through the same functions the tests use, on either target; these steps add the drill's timeline
(each call is marked in the measurement session) and the steady-state probes.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import httpx
import numpy as np

from drills import session, targets
from drills.measures import FAULT, WINDOW_S
from local.recorders import error_rate_percent, p95_latency_s
from pynomaly_ops.baselines import load
from pynomaly_ops.waiting import Timeout


def inject(
    fault: str, arguments: dict[str, Any] | None = None, from_events: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run the target's fault ``<fault>`` (``local.faults`` or ``aws_target.faults``, or on AWS ``--via fis``
    the stack's FIS template for the drill) and mark it as the drill's fault on the timeline; ``from_events``
    takes arguments from earlier steps (see :func:`recover`). Nothing is injected unless the drill is
    measuring: a start refused (another drill holds the target) stops it here."""
    drill = session.current().drill
    result = targets.inject(drill, fault, {**(arguments or {}), **_from_events(from_events)})
    # Via FIS the call returns once the experiment has acted and what it hit is seen: the fault began earlier.
    began = result["time"] if result.get("via") == targets.VIA_FIS else None
    session.mark(FAULT, {"fault": fault, **result}, at=began)
    return result


def _from_events(wanted: dict[str, str] | None) -> dict[str, Any]:
    """``{"prefix": "objects seeded.prefix"}``: the argument ``prefix`` is the ``prefix`` an earlier step's
    result marked as ``objects seeded`` holds (the last dot separates the event from the key)."""
    out = {}
    for argument, source in (wanted or {}).items():
        event, _, key = source.rpartition(".")
        detail = next((e["detail"] for e in reversed(session.current().events) if e["event"] == event), None)
        if not isinstance(detail, dict) or key not in detail:
            raise session.DrillError(f"this step needs {key!r} from the step marked {event!r}, which did not run")
        out[argument] = detail[key]
    return out


def recover(
    procedure: str, event: str, arguments: dict[str, Any] | None = None, from_events: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run the target's recovery procedure ``<procedure>`` (``local.recovery``, ``local.pitr``... or
    ``aws_target.recovery``) and mark its result as ``event``: its ``seconds`` (an RTO) and ``figures`` become the
    drill's measurements. ``from_events`` passes what earlier steps returned (the seeded objects, the fault's
    time) as arguments."""
    session.current()  # a procedure is only run while measured
    result = targets.function("recovery", procedure)(**(arguments or {}), **_from_events(from_events))
    session.mark(event, result)
    return result


def act(
    action: str,
    arguments: dict[str, Any] | None = None,
    event: str | None = None,
    from_events: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run the target's fault-library action ``<action>`` (a rollback, a procedure, a clean-up of the recovery
    procedures'). A method's step names its ``event`` and runs only while the drill is measuring (a refused
    start stops it); a rollback names none and always runs."""
    if event is not None:
        session.current()
    extra = _from_events(from_events) if from_events else {}
    try:
        run = targets.function("faults", action)
    except targets.DrillError:
        run = targets.function("recovery", action)
    result = run(**(arguments or {}), **extra)
    if session._SESSION is not None:
        session.mark(event or action, result)
    return result


def await_(
    probe: str,
    event: str,
    arguments: dict[str, Any] | None = None,
    since_event: str = FAULT,
    from_events: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run the target's deadline-bounded wait ``<probe>`` (``local.probes`` or ``aws_target.probes``), timed from
    ``since_event`` (the fault by default); mark it as ``event``. ``from_events`` passes what earlier steps
    returned (see :func:`recover`). On AWS the wait lasts at least its own default (targets.wait_timeout)."""
    wait = targets.function("probes", probe)
    kwargs = dict(arguments or {}) | _from_events(from_events)
    if (timeout := targets.wait_timeout(wait, kwargs.get("timeout_s"))) is not None:
        kwargs["timeout_s"] = timeout
    since = next((e["at"] for e in session.current().events if e["event"] == since_event), None)
    if "since" in inspect.signature(wait).parameters and since is not None:
        kwargs.setdefault("since", since)
    result = wait(**kwargs)
    session.mark(event, result)
    return result


def await_fault_argument(
    probe: str,
    event: str,
    argument: str,
    from_key: str,
    timeout_s: float,
    arguments: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A wait that needs something the fault returned (the old primary, the killed pid), e.g.
    ``wait_for_new_database_primary(old=<the fault's member>)``; ``arguments`` are the wait's others."""
    fault = next((e["detail"] for e in session.current().events if e["event"] == FAULT), None)
    if fault is None:
        raise session.DrillError(f"{probe} needs the fault's {from_key}, but no fault was injected")
    return await_(probe, event, {**(arguments or {}), argument: fault[from_key], "timeout_s": timeout_s})


def await_p95_under_warning(timeout_s: float, event: str = "p95 back under warning") -> dict[str, Any]:
    """Wait until the drill's own load sees p95 under the warning level for two windows in a row."""
    warning_s = load().thresholds.response_time_p95_ms.warning / 1000
    s = session.current()
    started = time.monotonic()
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        now = time.monotonic()
        recent = [r for r in s.requests.records if now - 2 * WINDOW_S <= r.t <= now - 1]
        p95 = p95_latency_s(recent)
        if len(recent) >= 10 and p95 is not None and p95 < warning_s and error_rate_percent(recent) == 0:
            return session.mark(event, {"seconds": time.monotonic() - started, "p95_ms": 1000 * p95})
        time.sleep(1.0)  # the polling interval of a deadline-bounded wait
    raise Timeout(f"p95 not back under {1000 * warning_s:g} ms within {timeout_s:g}s")


def hold(seconds: float, event: str) -> dict[str, Any]:
    """Keep a planned state on for its duration (a maintenance window's length; never a wait for recovery)."""
    time.sleep(seconds)
    return session.mark(event, {"held_s": seconds})


# --- batch jobs, as a client submits and polls them ------------------------------------------------
JOBS_SUBMITTED = "jobs submitted"
JOB_POLL_INTERVAL_S = 1.0
NOT_EXACTLY_ONCE = "jobs not completed exactly once"
JOB_FIGURES = ("jobs completed exactly once", NOT_EXACTLY_ONCE, "jobs run more than once", "jobs failed")


def _api(outputs: Any) -> httpx.Client:
    headers = {"Authorization": f"Bearer {outputs.api_key}"}
    return httpx.Client(base_url=outputs.load_balancer_url, headers=headers, timeout=10)


def submit_jobs(count: int, points: int = 500, seed: int = 0) -> dict[str, Any]:
    """Submit ``count`` batch jobs through the load balancer, each a different series of ``points`` values
    (seeded: the same drill submits the same jobs), and mark their ids on the timeline."""
    rng = np.random.default_rng(seed)
    ids = []
    with _api(session.current().outputs) as api:
        for _ in range(count):
            series = rng.normal(0, 1, points).round(6)
            series[rng.integers(points)] = 12.0  # one clear outlier each
            reply = api.post("/api/v1/jobs", json={"series": series.tolist()})
            if reply.status_code != 202:
                raise session.DrillError(f"job submission answered {reply.status_code}: {reply.text[:200]}")
            ids.append(reply.json()["job"]["id"])
    return session.mark(JOBS_SUBMITTED, {"count": len(ids), "ids": ids})


def await_jobs_done(timeout_s: float, event: str = "backlog drained", since_event: str = FAULT) -> dict[str, Any]:
    """Poll every submitted job through the API until none is queued or running; the figures say how many
    completed exactly once (completed, claimed once), ran more than once, or failed."""
    s = session.current()
    ids = next((e["detail"]["ids"] for e in s.events if e["event"] == JOBS_SUBMITTED), None)
    if ids is None:
        raise session.DrillError("await_jobs_done needs submit_jobs first: no jobs were submitted")
    since = next((e["at"] for e in s.events if e["event"] == since_event), time.time())
    deadline = time.monotonic() + timeout_s
    with _api(s.outputs) as api:
        while True:
            jobs = [api.get(f"/api/v1/jobs/{job_id}").json()["job"] for job_id in ids]
            if all(j["status"] in ("completed", "failed") for j in jobs):
                break
            if time.monotonic() > deadline:
                pending = sum(j["status"] not in ("completed", "failed") for j in jobs)
                raise Timeout(f"{pending} of {len(ids)} jobs still queued or running after {timeout_s:g}s")
            time.sleep(JOB_POLL_INTERVAL_S)  # the polling interval of a deadline-bounded wait
    once = sum(j["status"] == "completed" and j["attempts"] == 1 for j in jobs)
    counts = (once, len(jobs) - once, sum(j["attempts"] > 1 for j in jobs), sum(j["status"] == "failed" for j in jobs))
    figures = dict(zip(JOB_FIGURES, counts, strict=True))
    return session.mark(event, {"seconds": time.time() - since, "jobs": len(jobs), "figures": figures})


def await_alarm(
    key: str, timeout_s: float, event: str, since_event: str = FAULT, figure: str | None = None
) -> dict[str, Any]:
    """Until the catalogue alarm ``key`` fires on the target (as the drill's alert watcher sees it); the
    ``figure``, if named, counts it for an objective."""
    s = session.current()
    if s.watcher is None:
        raise session.DrillError(f"{targets.describe()} has no alarms to watch: {key} cannot be seen to fire")
    since = next((e["at"] for e in s.events if e["event"] == since_event), time.time())
    deadline = time.monotonic() + timeout_s
    while (fired := s.watcher.seen.get(key, {}).get("firing")) is None:
        if time.monotonic() > deadline:
            raise Timeout(f"alarm {key} did not fire within {timeout_s:g}s")
        time.sleep(session.WATCH_INTERVAL_S)
    return session.mark(event, {"key": key, "seconds": fired - since, "figures": {figure: 1} if figure else {}})


# --- steady state -----------------------------------------------------------------------
def health_ok(state_dir: str | None = None) -> bool:
    outputs = targets.outputs(state_dir)
    return httpx.get(f"{outputs.load_balancer_url}/health", timeout=3).status_code == 200


def within_warning(sample_s: float = 5, state_dir: str | None = None) -> dict[str, Any]:
    """A short sample of the drill's load: error rate and p95 must both be under their warning levels."""
    b, outputs = load(), targets.outputs(state_dir)
    recorder = session._probe_recorder(outputs, b.recovery.drill_load_per_s, sample_s)
    with recorder:
        recorder.run_for(sample_s)
    records = recorder.records
    p95 = p95_latency_s(records)
    error_rate = error_rate_percent(records)
    p95_ms = None if p95 is None else 1000 * p95
    ok = (
        error_rate < b.thresholds.error_rate_percent.warning
        and p95_ms is not None
        and p95_ms < b.thresholds.response_time_p95_ms.warning
    )
    return {"ok": ok, "requests": len(records), "error_rate_percent": error_rate, "p95_ms": p95_ms}


def topology_intact(state_dir: str | None = None) -> bool:
    """The shape every drill must find and leave: see drills/topology.py."""
    from drills import topology

    return topology.healthy(topology.snapshot(state_dir))


def active_alarms(keys: list[str], state_dir: str | None = None) -> dict[str, str]:
    """Which of the catalogue alarms ``keys`` are active on the target: ``{key: "pending" | "firing"}``."""
    return targets.active_alarms(keys, state_dir)


def no_alarm_firing(keys: list[str], state_dir: str | None = None) -> bool:
    """None of the catalogue alarms ``keys`` is firing on the target (an alarm already firing means the
    steady state is broken before any fault)."""
    return "firing" not in active_alarms(keys, state_dir).values()


# --- the high-load procedure (000), with its numbers from the file ----------------------------
def spike() -> dict[str, Any]:
    """The fault of the traffic-spike drill: the load raised to the peak multiple of normal (000 Traffic
    Patterns)."""
    result = session.add_load(load().traffic.peak_multiplier)
    session.mark(FAULT, {"fault": "spike", **(result.get("detail") or {})})
    return result


def high_load_procedure() -> dict[str, Any]:
    """000 Emergency Procedures, High Load: scale to the high-load instance count."""
    return act("scale_instances", {"count": load().scaling.instances_high_load}, "scaled out")


def back_to_normal() -> dict[str, Any]:
    """Extra load off (if a drill is measuring) and the fleet back to its normal count: idempotent, a rollback."""
    if session._SESSION is not None:
        session.remove_load()
    measuring = session._SESSION is not None
    return act("scale_instances", {"count": load().scaling.instances_normal}, "scaled back" if measuring else None)
