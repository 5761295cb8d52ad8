"""The target's shape, before and after a drill: every drill must leave it as it found it.

The shape is what the runbooks rely on, not who holds which role: the instance count, every instance in
service, a database leader with a synchronous standby, one Redis primary with its replica, empty queues.
A failover that moved the primary to the other zone leaves the shape intact.
"""

from __future__ import annotations

import time
from typing import Any

from local import aws, probes
from local.programs import REDIS_NODES
from local.stack import running_stack


def _queue_depths(state_dir: str | None) -> dict[str, int]:
    depths = aws.queue_depths(running_stack(state_dir).wiring)
    return {role: d.visible + d.in_flight for role, d in depths.items()}


def snapshot(state_dir: str | None = None) -> dict[str, Any]:
    """What the target looks like now; a part that cannot be read is recorded as its error."""
    shape: dict[str, Any] = {}
    readers = {
        "instances": lambda: probes.instance_count(state_dir),
        "instances_up": lambda: probes.instance_count(state_dir, status="UP"),
        "database_ready": lambda: probes.database_ready(state_dir),
        "redis_roles": lambda: sorted(probes.redis_role(n, state_dir) for n in REDIS_NODES),
        "queues": lambda: _queue_depths(state_dir),
    }
    for part, read in readers.items():
        try:
            shape[part] = read()
        except Exception as exc:  # a part that does not answer is part of the picture
            shape[part] = f"unreadable: {type(exc).__name__}: {exc}"
    return shape


def healthy(shape: dict[str, Any]) -> bool:
    return (
        isinstance(shape.get("instances"), int)
        and shape["instances"] == shape.get("instances_up")
        and shape.get("database_ready") is True
        and shape.get("redis_roles") == ["master", "slave"]
        and shape.get("queues") == {"jobs": 0, "dead_letters": 0}
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
