"""The steps a drill's experiment is made of, as Chaos Toolkit ``python`` providers (module ``drills.steps``).

Faults and waits are the fault library's (local/faults.py, local/probes.py), called by name, so every
experiment injects and observes through the same functions the tests use; these steps add the drill's
timeline (each call is marked in the measurement session) and the steady-state probes.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import httpx

from drills import session
from drills.measures import FAULT, WINDOW_S
from local import faults, probes
from local.recorders import error_rate_percent, p95_latency_s
from pynomaly_ops.baselines import load


def inject(fault: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run ``local.faults.<fault>`` and mark it as the drill's fault on the timeline."""
    result = getattr(faults, fault)(**(arguments or {}))
    session.mark(FAULT, {"fault": fault, **result})
    return result


def act(action: str, arguments: dict[str, Any] | None = None, event: str | None = None) -> dict[str, Any]:
    """Run ``local.faults.<action>`` as a recovery step (a rollback, a procedure), marked as ``event``."""
    result = getattr(faults, action)(**(arguments or {}))
    if session._SESSION is not None:
        session.mark(event or action, result)
    return result


def await_(probe: str, event: str, arguments: dict[str, Any] | None = None, since_event: str = FAULT) -> dict[str, Any]:
    """Run the deadline-bounded wait ``local.probes.<probe>``, timed from ``since_event`` (the fault by
    default); mark it as ``event``."""
    wait = getattr(probes, probe)
    kwargs = dict(arguments or {})
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
    raise probes.ProbeError(f"p95 not back under {1000 * warning_s:g} ms within {timeout_s:g}s")


def hold(seconds: float, event: str) -> dict[str, Any]:
    """Keep a planned state on for its duration (a maintenance window's length; never a wait for recovery)."""
    time.sleep(seconds)
    return session.mark(event, {"held_s": seconds})


# --- steady state -----------------------------------------------------------------------
def health_ok(state_dir: str | None = None) -> bool:
    outputs = session.target_outputs(state_dir)
    return httpx.get(f"{outputs.load_balancer_url}/health", timeout=3).status_code == 200


def within_warning(sample_s: float = 5, state_dir: str | None = None) -> dict[str, Any]:
    """A short sample of the drill's load: error rate and p95 must both be under their warning levels."""
    b, outputs = load(), session.target_outputs(state_dir)
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


def no_alarm_firing(keys: list[str], state_dir: str | None = None) -> bool:
    """None of the catalogue alarms ``keys`` is firing on the target (an alarm already firing means the
    steady state is broken before any fault)."""
    outputs = session.target_outputs(state_dir)
    if not outputs.prometheus_url:
        return True
    names = {outputs.alarms[k][t]: k for k in keys if k in outputs.alarms for t in outputs.alarms[k]}
    alerts = httpx.get(f"{outputs.prometheus_url}/api/v1/alerts", timeout=3).json()["data"]["alerts"]
    return not any(a["state"] == "firing" and a["labels"].get("alertname") in names for a in alerts)


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
    return act("scale_instances", {"count": load().scaling.instances_normal}, "scaled back")
