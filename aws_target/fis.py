"""A drill's fault through AWS Fault Injection Service: ``drill run NAME --target aws --via fis``.

The stack's own experiment template for the drill (infra/fault_injection.py, exported as
``fis_experiment_templates`` when the stack enables FIS) breaks the target instead of the fault library's API
call, with the template's alarm stop conditions and role; the drill measures, waits and judges as without it.
:func:`inject` returns what the fault library's counterpart would (the lost instance as ``pid``, the old primary
as ``member`` or ``primary``, the deleted pods as ``deleted``, the lost node as ``node``): what was aimed at is read
before the experiment starts, what FIS chose (one instance of the group, one pod) from its resolved targets or,
where FIS resolves none to that level, from what went missing. :func:`stop_started` stops what this process
started and is still running: the runner calls it whatever happens to the drill.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aws_target import kubernetes, resources
from aws_target.faults import FaultError
from aws_target.outputs import STACK_ENV
from aws_target.target import POLL_INTERVAL_S, Target, resolve
from pynomaly_ops.settings import PROJECT
from pynomaly_ops.waiting import NotYet, Timeout, wait_for

DRILL_TAG = f"{PROJECT}:drill"  # on each experiment this runner starts
ENVIRONMENT_TAG = "Environment"  # the stack's name, as on every resource of it (pynomaly_ops/settings.py: tags)
STARTED_TIMEOUT_S = 120  # FIS initiates an experiment (resolves its targets, checks its role) in seconds
HIT_TIMEOUT_S = 300  # until what FIS chose is seen gone: an instance terminating, a pod deleted, a node lost
ENDED = ("completed", "stopped", "failed", "cancelled")
ACTING = ("running", "completed")  # an action's states once it has acted

_started: list[tuple[Target, str]] = []  # this process's experiments, for stop_started


Read = Callable[[str | None, str | None], Any]  # a reading of the stack, given ``outputs`` and ``stack``


@dataclass(frozen=True)
class Aim:
    """What a fault hits, read through the stack: ``before`` what the fault library's result names before the
    fault; ``among`` (with ``key``) the names FIS picks from, whose missing member is what it hit."""

    before: Read | None = None
    among: Read | None = None
    key: str = ""
    many: bool = False  # the result holds a list (the deleted pods), not one name


def _db_primary(outputs: str | None, stack: str | None) -> dict[str, Any]:
    db = resources.db_instance(resolve(outputs, stack))
    return {"name": db["DBInstanceIdentifier"], "member": db["AvailabilityZone"]}


def _cache_primary(outputs: str | None, stack: str | None) -> dict[str, Any]:
    rg = resources.replication_group(resolve(outputs, stack))
    return {"name": rg["ReplicationGroupId"], "primary": resources.primary_member(rg)}


def _in_service(outputs: str | None, stack: str | None) -> set[str]:
    return set(resources.in_service(resources.group(resolve(outputs, stack))))


# The fault library's faults a template stands in for (the experiments name the fault, not the template).
AIMS: dict[str, Aim] = {
    "kill_process": Aim(among=_in_service, key="pid"),
    "kill_database_primary": Aim(before=_db_primary),
    "freeze_redis_primary": Aim(before=_cache_primary),
    "delete_api_pods": Aim(among=lambda o, s: set(kubernetes.ready_api_pods(o, s)), key="deleted", many=True),
    "drain_node": Aim(among=lambda o, s: set(kubernetes.ready_nodes(o, s)), key="node"),
}


def template_for(drill: str, t: Target) -> str:
    found = t.outputs.fis_experiment_templates.get(drill)
    if not found:
        raise FaultError(
            f"the stack exports no FIS experiment template for {drill} (fis_experiment_templates has "
            f"{', '.join(t.outputs.fis_experiment_templates) or 'none'}): enable fis in the stack's config and "
            "`pulumi up`, or run the drill without --via fis"
        )
    return found


def _experiment(t: Target, experiment_id: str) -> dict[str, Any]:
    return dict(t.client("fis").get_experiment(id=experiment_id)["experiment"])


def _acting(t: Target, experiment_id: str) -> dict[str, Any]:
    """The experiment once every action has acted; FaultError if it ended otherwise (a stop condition, its
    role refused...), with FIS's reason."""
    e = _experiment(t, experiment_id)
    state = e["state"]["status"]
    if state in ENDED and state != "completed":
        raise FaultError(f"FIS experiment {experiment_id} {state}: {e['state'].get('reason', '')}")
    actions = e.get("actions") or {}
    if state in ACTING and all(a.get("state", {}).get("status") in ACTING for a in actions.values()):
        return e
    raise NotYet(f"experiment {experiment_id} {state}")


def _started_at(e: dict[str, Any]) -> float:
    """When its first action started (the fault's time), else the experiment's."""
    times = [a["startTime"] for a in (e.get("actions") or {}).values() if a.get("startTime")]
    first = min(times) if times else e.get("startTime")
    return first.timestamp() if isinstance(first, datetime) else float(first or time.time())


def _resolved(t: Target, experiment_id: str) -> set[str]:
    """What FIS resolved the experiment's targets to: each value of their ``targetInformation`` (an ARN, an id:
    the API leaves its keys to the resource type), and an ARN's last part (an instance's id)."""
    pages = t.client("fis").get_paginator("list_experiment_resolved_targets").paginate(experimentId=experiment_id)
    values = {str(v) for page in pages for r in page.get("resolvedTargets", [])
              for v in (r.get("targetInformation") or {}).values()}  # fmt: skip
    return values | {v.rsplit("/", 1)[-1] for v in values}


def _hit(
    aim: Aim, before: set[str], resolved: set[str], read: Callable[[], set[str]], timeout_s: float
) -> dict[str, Any]:
    """What FIS hit among ``before``: named by its resolved targets, else the member that went missing from
    ``read()``."""
    named = sorted(before & resolved)

    def gone() -> list[str]:
        if missing := named or sorted(before - read()):
            return missing
        raise NotYet(f"none of {', '.join(sorted(before))} gone yet")

    lost = wait_for(f"what the FIS experiment hit ({aim.key})", gone, timeout_s, POLL_INTERVAL_S)
    return {aim.key: lost if aim.many else lost[0]}


def inject(
    drill: str,
    fault: str,
    outputs: str | None = None,
    stack: str | None = None,
    timeout_s: float = HIT_TIMEOUT_S,
) -> dict[str, Any]:
    """Start the stack's FIS experiment template for ``drill`` in place of the fault ``fault``; returns once its
    actions have acted and what they hit is known, with the fault's ``time`` (its first action's start)."""
    t = resolve(outputs, stack)
    aim = AIMS.get(fault)
    if aim is None:
        raise FaultError(f"{drill}'s fault {fault} has no FIS counterpart: run it without --via fis")
    template = template_for(drill, t)
    aimed = aim.before(outputs, stack) if aim.before else {}
    among: set[str] = aim.among(outputs, stack) if aim.among else set()
    named = stack or os.environ.get(STACK_ENV)
    if not named:  # the runner's policy lets it follow and stop only experiments tagged with the stack's name
        raise FaultError(f"via FIS the stack is named (--stack, or ${STACK_ENV}): its experiments carry its name")
    tags = {DRILL_TAG: drill, ENVIRONMENT_TAG: named}
    started = t.client("fis").start_experiment(clientToken=str(uuid.uuid4()), experimentTemplateId=template, tags=tags)[
        "experiment"
    ]
    _started.append((t, started["id"]))
    try:
        e = wait_for(f"FIS experiment {started['id']} acting", lambda: _acting(t, started["id"]),
                     STARTED_TIMEOUT_S, POLL_INTERVAL_S)  # fmt: skip
    except Timeout as exc:
        raise FaultError(str(exc)) from None
    if aim.among is None:
        hit = {}
    else:
        read = aim.among
        hit = _hit(aim, among, _resolved(t, started["id"]), lambda: set(read(outputs, stack)), timeout_s)
    return {"via": "fis", "experiment": started["id"], "template": template, **aimed, **hit, "time": _started_at(e)}


def stop_started() -> list[str]:
    """Stop every experiment this process started that is still running (a drill failed, aborted or was
    interrupted while FIS still acts: an AZ power interruption lasts its duration); returns their ids."""
    stopped, failed = [], []
    while _started:
        t, experiment_id = _started.pop()
        try:  # one that cannot be read or stopped does not keep the others running
            if _experiment(t, experiment_id)["state"]["status"] not in ENDED:
                t.client("fis").stop_experiment(id=experiment_id)
                stopped.append(experiment_id)
        except Exception as exc:  # named below, with how to stop it by hand
            failed.append(f"{experiment_id} ({type(exc).__name__}: {exc})")
    if failed:
        raise FaultError(f"could not stop FIS experiments {'; '.join(failed)}: `aws fis stop-experiment --id ID`")
    return stopped
