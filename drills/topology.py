"""The target's shape, before and after a drill: every drill must leave it as it found it.

The shape is what the runbooks rely on, not who holds which role: the instance count, every instance in
service, a database leader with a synchronous standby, one Redis primary with its replica, empty queues (on
AWS: no dead letters), and with EKS the API pods ready and no node cordoned. A failover that moved the
primary to the other zone leaves the shape intact. The target is drills/targets.py's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from local import aws, probes
from local.programs import REDIS_NODES
from local.stack import running_stack


def _queue_depths(state_dir: str | None) -> dict[str, int]:
    depths = aws.queue_depths(running_stack(state_dir).wiring)
    return {role: d.visible + d.in_flight for role, d in depths.items()}


def _local_readers(state_dir: str | None) -> dict[str, Callable[[], Any]]:
    return {
        "instances": lambda: probes.instance_count(state_dir),
        "instances_up": lambda: probes.instance_count(state_dir, status="UP"),
        "database_ready": lambda: probes.database_ready(state_dir),
        "redis_roles": lambda: sorted(probes.redis_role(n, state_dir) for n in REDIS_NODES),
        "queues": lambda: _queue_depths(state_dir),
    }


# ElastiCache's words for the roles, as Redis's own INFO says them (the local stack's).
REDIS_ROLES = {"primary": "master", "replica": "slave"}


def _aws_readers() -> dict[str, Callable[[], Any]]:
    """A stack's shape: on a real stack the job queue is never still (users submit jobs), so of the queues only
    the dead letters, which a drill's poison message must not leave behind; with EKS, the API pods and nodes."""
    from aws_target import kubernetes, resources
    from aws_target import probes as aws_probes
    from aws_target.target import resolve
    from pynomaly_ops.metrics import DEAD_LETTER_QUEUE

    t = resolve()

    def redis_roles() -> list[str]:
        members = resources.node_group(resources.replication_group(t))["NodeGroupMembers"]
        return sorted(REDIS_ROLES.get(m.get("CurrentRole", ""), str(m.get("CurrentRole"))) for m in members)

    def dead_letters() -> dict[str, int]:
        depth = aws_probes.queue_depths()[DEAD_LETTER_QUEUE]
        return {DEAD_LETTER_QUEUE: depth["visible"] + depth["in_flight"]}

    readers: dict[str, Callable[[], Any]] = {
        "instances": lambda: aws_probes.instance_count(),
        "instances_up": lambda: aws_probes.instance_count("UP"),
        "database_ready": lambda: aws_probes.database_ready(),
        "redis_roles": redis_roles,
        "queues": dead_letters,
    }
    if t.outputs.cluster_name:
        readers["api_pods_ready"] = lambda: kubernetes.api_pods_ready()
        readers["nodes_schedulable"] = lambda: kubernetes.nodes_schedulable()
    return readers


def snapshot(state_dir: str | None = None) -> dict[str, Any]:
    """What the target looks like now; a part that cannot be read is recorded as its error."""
    from drills import targets

    shape: dict[str, Any] = {}
    try:
        readers = _local_readers(state_dir) if targets.current() == targets.LOCAL else _aws_readers()
    except Exception as exc:  # the target itself cannot be named or read
        return {"target": f"unreadable: {type(exc).__name__}: {exc}"}
    for part, read in readers.items():
        try:
            shape[part] = read()
        except Exception as exc:  # a part that does not answer is part of the picture
            shape[part] = f"unreadable: {type(exc).__name__}: {exc}"
    return shape


def healthy(shape: dict[str, Any]) -> bool:
    roles = shape.get("redis_roles")
    queues = shape.get("queues")
    return (
        isinstance(shape.get("instances"), int)
        and shape["instances"] == shape.get("instances_up")
        and shape.get("database_ready") is True
        and isinstance(roles, list)
        and roles.count("master") == 1
        and len(roles) >= 2
        and set(roles) == {"master", "slave"}
        and isinstance(queues, dict)
        and not any(queues.values())
        and shape.get("api_pods_ready", True) is True
        and shape.get("nodes_schedulable", True) is True
    )


def differences(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {k: {"before": before.get(k), "after": after.get(k)} for k in before if before.get(k) != after.get(k)}


def wait_until_restored(
    before: dict[str, Any], timeout_s: float, state_dir: str | None = None
) -> tuple[dict[str, Any], float]:
    """Poll until the shape equals ``before`` (recovery may still be settling) or the deadline passes;
    returns the last snapshot and the seconds waited."""
    started = time.monotonic()
    while True:
        after = snapshot(state_dir)
        if not differences(before, after) or time.monotonic() - started >= timeout_s:
            return after, time.monotonic() - started
        time.sleep(1.0)  # the polling interval of a deadline-bounded wait
