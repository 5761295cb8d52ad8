"""Observe a stack on AWS: where the database primary is, the cache's primary, the fleet in the load balancer,
the queues, the maintenance switch and the catalogue's CloudWatch alarms.

The counterparts of local/probes.py, by the same names and arguments, with ``outputs`` (a saved ``pulumi
stack output --json``) and ``stack`` (its name) where those take ``state_dir``. Each raises when it cannot
answer and waits only by polling against a deadline; ``seconds`` counts from ``since`` (a fault's ``time``).
None sends traffic to the service: the maintenance state is read from the listener, what users see is the
drill's own measurement.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from aws_target import resources
from aws_target import target as targets
from aws_target.target import Target, resolve
from pynomaly_ops import maintenance, queue_messages
from pynomaly_ops.alarms import Target as AlarmTarget
from pynomaly_ops.metrics import DEAD_LETTER_QUEUE, JOBS_QUEUE
from pynomaly_ops.waiting import NotYet, changed, clock, wait_for

# The local stack's load balancer words (HAProxy's) for the target group's states, so an experiment's
# ``status`` means the same on both targets.
LOCAL_STATES = {"UP": resources.HEALTHY, "DOWN": "unhealthy", "DRAIN": "draining"}
ALARM = "ALARM"
ALARM_TYPES = ["MetricAlarm", "CompositeAlarm"]  # without it CloudWatch answers for metric alarms only


class ProbeError(RuntimeError):
    """The stack cannot answer the question (no such alarm, a status this target has no word for...)."""


def _poll() -> float:
    return targets.POLL_INTERVAL_S


def stack_outputs(outputs: str | None = None, stack: str | None = None) -> dict[str, Any]:
    """The stack's outputs: the keys of `pulumi stack output --json`."""
    return resolve(outputs, stack).outputs.model_dump()


# --- the database: RDS Multi-AZ ----------------------------------------------------------------------------
def _primary_zone(t: Target) -> str:
    return str(resources.db_instance(t)["AvailabilityZone"])


def database_primary(outputs: str | None = None, stack: str | None = None) -> str:
    """The availability zone the database's writer runs in: a failover moves it to the standby's."""
    return _primary_zone(resolve(outputs, stack))


def _multi_az_available(t: Target) -> dict[str, Any]:
    db = resources.db_instance(t)
    if db["DBInstanceStatus"] != "available" or not db.get("MultiAZ"):
        raise NotYet(f"{db['DBInstanceIdentifier']} {db['DBInstanceStatus']}, Multi-AZ {bool(db.get('MultiAZ'))}")
    return db


def database_ready(outputs: str | None = None, stack: str | None = None) -> bool:
    """The instance available with its standby (Multi-AZ): the shape a failover needs and leaves."""
    try:
        return bool(_multi_az_available(resolve(outputs, stack)))
    except NotYet:
        return False


def wait_for_database_ready(
    timeout_s: float = 600, since: float | None = None, outputs: str | None = None, stack: str | None = None
) -> dict[str, Any]:
    """Until the instance is available again with its standby (the old primary's zone, after a failover)."""
    t, elapsed = resolve(outputs, stack), clock(since)
    db = wait_for("the database available with its standby", lambda: _multi_az_available(t), timeout_s, _poll())
    return {"leader": db["AvailabilityZone"], "standby": db.get("SecondaryAvailabilityZone"), "seconds": elapsed()}


def wait_for_new_database_primary(
    old: str, timeout_s: float = 180, since: float | None = None, outputs: str | None = None, stack: str | None = None
) -> dict[str, Any]:
    """Until the writer runs in a zone other than ``old`` (the zone :func:`kill_database_primary` returned)."""
    t, elapsed = resolve(outputs, stack), clock(since)
    leader = wait_for(f"the database primary out of {old}", changed(lambda: _primary_zone(t), old), timeout_s, _poll())
    return {"leader": leader, "old": old, "seconds": elapsed()}


# --- the cache: ElastiCache Redis ----------------------------------------------------------------------------
def _redis_primary(t: Target) -> str:
    return resources.primary_member(resources.replication_group(t))


def redis_primary(outputs: str | None = None, stack: str | None = None) -> str:
    """The cache cluster (node) of the replication group that is the primary."""
    return _redis_primary(resolve(outputs, stack))


def wait_for_new_redis_primary(
    old: str, timeout_s: float = 300, since: float | None = None, outputs: str | None = None, stack: str | None = None
) -> dict[str, Any]:
    """Until a node other than ``old`` is the primary."""
    t, elapsed = resolve(outputs, stack), clock(since)
    primary = wait_for(f"a new Redis primary (not {old})", changed(lambda: _redis_primary(t), old), timeout_s, _poll())
    return {"primary": primary, "old": old, "seconds": elapsed()}


# --- the fleet in the load balancer ---------------------------------------------------------------------------
def instance_status(outputs: str | None = None, stack: str | None = None) -> dict[str, str]:
    """Each of the group's instances and its state in the load balancer (``healthy``, ``draining``...)."""
    t = resolve(outputs, stack)
    return resources.target_states(t, resources.group(t))


def _state(status: str) -> str:
    return LOCAL_STATES.get(status, status)


def instance_count(status: str | None = None, outputs: str | None = None, stack: str | None = None) -> int:
    """The group's instances in the load balancer; with ``status`` (``healthy``, or the local ``UP``...), only
    those in it."""
    states = instance_status(outputs, stack).values()
    return sum(status is None or s == _state(status) for s in states)


def _capacity(t: Target, count: int | None) -> list[str]:
    """The in-service instances once there are ``count`` (default: the group's desired capacity), each healthy
    in the load balancer: a scale-in is done when the instances it removes are out of service."""
    g = resources.group(t)
    wanted = g["DesiredCapacity"] if count is None else count
    in_service, healthy = resources.in_service(g), resources.healthy_in_service(t, g)
    if len(in_service) != wanted or len(healthy) != wanted:
        raise NotYet(
            f"{len(in_service)} instances in service, {len(healthy)} healthy in the load balancer, of {wanted}"
        )
    return healthy


def wait_for_capacity(
    count: int | None = None,
    timeout_s: float = 600,
    since: float | None = None,
    outputs: str | None = None,
    stack: str | None = None,
) -> dict[str, Any]:
    """Until the group has ``count`` instances (default: its desired capacity) in service, each healthy in the
    load balancer: launched, booted and passing its checks, or the ones a scale-in removes gone."""
    t, elapsed = resolve(outputs, stack), clock(since)
    healthy = wait_for("the fleet's capacity", lambda: _capacity(t, count), timeout_s, _poll())
    return {"instances": healthy, "count": len(healthy), "seconds": elapsed()}


def wait_for_instance_out_or_replaced(
    name: str,
    old_pid: str,
    timeout_s: float = 30,
    since: float | None = None,
    outputs: str | None = None,
    stack: str | None = None,
) -> dict[str, Any]:
    """Until the load balancer stops sending to the lost instance ``old_pid`` (its id, which
    :func:`~aws_target.faults.kill_process` returns as ``pid``): it is no longer healthy there, or the group
    has already replaced it with as many healthy instances as it wants. ``out`` says which."""
    t, elapsed = resolve(outputs, stack), clock(since)

    def settled() -> dict[str, Any] | None:
        g = resources.group(t)
        state = resources.target_states(t, g, [old_pid])[old_pid]  # the group may have let it go already
        if state != resources.HEALTHY:
            return {"out": True, "state": state}
        if old_pid not in resources.in_service(g) and _capacity(t, None):
            return {"out": False, "replaced": True}
        return None

    result = wait_for(f"{name} ({old_pid}) out of the load balancer or replaced", settled, timeout_s, _poll())
    return {"name": name, "instance_id": old_pid, **(result or {}), "seconds": elapsed()}  # wait_for: truthy only


def wait_for_instance_status(
    name: str,
    status: str,
    timeout_s: float = 30,
    since: float | None = None,
    interval_s: float | None = None,
    outputs: str | None = None,
    stack: str | None = None,
) -> dict[str, Any]:
    """``UP``: until the fleet is back at its desired capacity, healthy (the group fills ``name``'s place with
    an instance of its choosing). Other states name one local process and have no AWS counterpart."""
    if _state(status) != resources.HEALTHY:
        raise ProbeError(f"on AWS an instance is awaited UP (the group's capacity back), not {status!r}")
    t, elapsed = resolve(outputs, stack), clock(since)
    healthy = wait_for(f"{name}'s place filled", lambda: _capacity(t, None), timeout_s, interval_s or _poll())
    return {"name": name, "status": status, "instances": healthy, "seconds": elapsed()}


# --- the job queue --------------------------------------------------------------------------------------------
def _queue_depths(t: Target) -> dict[str, dict[str, int]]:
    sqs, urls = t.client("sqs"), {JOBS_QUEUE: t.outputs.queue_url, DEAD_LETTER_QUEUE: t.outputs.dead_letter_queue_url}
    depths = {role: queue_messages.depth(sqs, url) for role, url in urls.items()}
    return {role: {"visible": visible, "in_flight": in_flight} for role, (visible, in_flight) in depths.items()}


def queue_depths(outputs: str | None = None, stack: str | None = None) -> dict[str, dict[str, int]]:
    """The job queue's and the dead-letter queue's messages: ``{role: {"visible", "in_flight"}}``."""
    return _queue_depths(resolve(outputs, stack))


def wait_for_queue_depth(
    role: str,
    at_least: int,
    timeout_s: float = 30,
    since: float | None = None,
    outputs: str | None = None,
    stack: str | None = None,
) -> dict[str, Any]:
    """Until queue ``role`` (``jobs``, ``dead_letters``) holds ``at_least`` visible messages."""
    t, elapsed = resolve(outputs, stack), clock(since)

    def reached() -> int | None:
        visible = _queue_depths(t)[role]["visible"]
        return visible if visible >= at_least else None

    visible = wait_for(f"{at_least} messages visible in the {role} queue", reached, timeout_s, _poll())
    return {"role": role, "visible": visible, "seconds": elapsed()}


# --- the load balancer's maintenance switch ---------------------------------------------------------------
def _serves_page(t: Target) -> bool:
    fixed = [a.get("FixedResponseConfig", {}) for a in resources.default_actions(t) if a["Type"] == "fixed-response"]
    return any(f.get("StatusCode") == maintenance.STATUS_CODE for f in fixed)


def maintenance_page_served(outputs: str | None = None, stack: str | None = None) -> bool:
    """The HTTPS listener answers every request with the maintenance page instead of forwarding: read from
    the listener's configuration (ELB applies a change within seconds), not by sending a request."""
    return _serves_page(resolve(outputs, stack))


def wait_for_maintenance_page(
    served: bool = True,
    timeout_s: float = 30,
    since: float | None = None,
    outputs: str | None = None,
    stack: str | None = None,
) -> dict[str, Any]:
    """Until the listener serves the page (``served``) or forwards to the fleet again (not ``served``)."""
    t, elapsed = resolve(outputs, stack), clock(since)
    what = "the maintenance page" if served else "forwarding to the fleet"
    wait_for(what, lambda: _serves_page(t) == served, timeout_s, _poll())
    return {"served": served, "seconds": elapsed()}


# --- detection: the catalogue's CloudWatch alarms ----------------------------------------------------------
def _alarm_names(t: Target, keys: list[str]) -> dict[str, str]:
    """``{alarm name: catalogue key}``: this stack's CloudWatch name of each key (pynomaly_ops/alarms.py)."""
    names = {}
    for key in keys:
        name = t.outputs.alarms.get(key, {}).get(AlarmTarget.CLOUDWATCH)
        if name is None:
            known = ", ".join(sorted(k for k, v in t.outputs.alarms.items() if AlarmTarget.CLOUDWATCH in v))
            raise ProbeError(f"the stack has no CloudWatch alarm {key!r}; it has: {known or 'none'}")
        names[name] = key
    return names


DESCRIBE_ALARMS_MAX = 100  # AlarmNames per DescribeAlarms call


def alarms_in_alarm(keys: list[str], outputs: str | None = None, stack: str | None = None) -> dict[str, float]:
    """The catalogue alarms of ``keys`` in ALARM now, each with when it went there: ``{key: wall-clock time}``."""
    t = resolve(outputs, stack)
    names, cloudwatch, found = _alarm_names(t, keys), t.client("cloudwatch"), {}
    listed = list(names)
    for i in range(0, len(listed), DESCRIBE_ALARMS_MAX):
        page = cloudwatch.describe_alarms(AlarmNames=listed[i : i + DESCRIBE_ALARMS_MAX], AlarmTypes=ALARM_TYPES)
        for a in [*page.get("MetricAlarms", []), *page.get("CompositeAlarms", [])]:
            if a["StateValue"] == ALARM:
                found[names[a["AlarmName"]]] = float(a["StateUpdatedTimestamp"].timestamp())
    return found


def active_alarms(keys: list[str], outputs: str | None = None, stack: str | None = None) -> dict[str, str]:
    """Which of the catalogue alarms ``keys`` are in ALARM now: ``{key: "firing"}`` (CloudWatch has no
    pending state: an alarm goes to ALARM once its evaluation periods have breached)."""
    return dict.fromkeys(alarms_in_alarm(keys, outputs, stack), "firing")


def _went_to_alarm(item: dict[str, Any]) -> bool:
    return bool(json.loads(item.get("HistoryData") or "{}").get("newState", {}).get("stateValue") == ALARM)


def _first_alarm(cloudwatch: Any, name: str, since: float) -> float | None:
    """When alarm ``name`` first went to ALARM at or after ``since``, from its state history."""
    pages = cloudwatch.get_paginator("describe_alarm_history").paginate(
        AlarmName=name,
        AlarmTypes=ALARM_TYPES,
        HistoryItemType="StateUpdate",
        StartDate=datetime.fromtimestamp(since, UTC),
        ScanBy="TimestampAscending",
    )
    for page in pages:
        for item in page.get("AlarmHistoryItems", []):
            if _went_to_alarm(item):
                return float(item["Timestamp"].timestamp())
    return None


def _fired(t: Target, keys: list[str], since: float) -> dict[str, dict[str, Any]]:
    cloudwatch, fired = t.client("cloudwatch"), {}
    for name, key in _alarm_names(t, keys).items():
        if (at := _first_alarm(cloudwatch, name, since)) is not None:
            fired[key] = {"alarm": name, "at": at, "seconds": at - since}
    return fired


def alarms_fired(
    keys: list[str], since: float, outputs: str | None = None, stack: str | None = None
) -> dict[str, dict[str, Any]]:
    """Detection: which of the catalogue alarms ``keys`` went to ALARM at or after ``since`` (a fault's
    ``time``), when first (``at``) and how long after (``seconds``), from each alarm's state history."""
    return _fired(resolve(outputs, stack), keys, since)


def wait_for_alarm(
    key: str, timeout_s: float = 600, since: float | None = None, outputs: str | None = None, stack: str | None = None
) -> dict[str, Any]:
    """Until the catalogue alarm ``key`` has gone to ALARM since ``since`` (default: now)."""
    t = resolve(outputs, stack)
    _alarm_names(t, [key])  # an unknown key is an error now, not a wait until the deadline
    origin = time.time() if since is None else since
    fired = wait_for(f"alarm {key} in ALARM", lambda: _fired(t, [key], origin).get(key), timeout_s, _poll())
    return {"key": key, **(fired or {})}  # wait_for returns only a truthy result
