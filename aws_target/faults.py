"""Break a stack on AWS: lose an instance, fail the database and the cache over, stop the queue's consumers,
scale the fleet, switch the load balancer to the maintenance page, corrupt the drill's objects.

The counterparts of local/faults.py, by the same names and arguments, with ``outputs`` (a saved ``pulumi
stack output --json``) and ``stack`` (its name) where those take ``state_dir``; a drill's experiment calls
either by name. Each raises when it cannot act and returns a dict saying what it did, with the wall-clock
``time`` of the fault (pass it as ``since`` to the probes' waits). Rollbacks are idempotent.
"""

from __future__ import annotations

import time
from typing import Any

from aws_target import commands, probes, resources
from aws_target.target import Target, resolve
from pynomaly_ops import maintenance, object_versions, queue_messages
from pynomaly_ops import outputs as keys

KILL = ("KILL", "9")  # the signal names of a lost host: an instance is terminated, nothing else is sent
WORKER_COMMAND_TIMEOUT_S = 120  # the agent picks a command up within seconds; systemctl stop waits for the worker


class FaultError(RuntimeError):
    """The fault could not be injected (no such instance, a database without a standby...)."""


# --- instance loss (000 System Down) ------------------------------------------------------------------------
def kill_process(
    name: str, sig: str | int = "SIGKILL", outputs: str | None = None, stack: str | None = None
) -> dict[str, Any]:
    """Lose API instance ``name`` (``api-N``: see aws_target/resources.py): it is terminated and the Auto
    Scaling group, keeping its desired capacity, launches a replacement. ``pid`` is the instance's id, the key
    the local experiments pass on as ``old_pid``."""
    if str(sig).upper().removeprefix("SIG") not in KILL:
        raise FaultError(f"on AWS an instance is lost by terminating it: SIGKILL only, not {sig!r}")
    t = resolve(outputs, stack)
    g = resources.group(t)
    try:
        instance = resources.instance_named(g, name)
    except resources.ResourceError as exc:
        raise FaultError(str(exc)) from None
    at = time.time()
    t.client("autoscaling").terminate_instance_in_auto_scaling_group(
        InstanceId=instance["InstanceId"], ShouldDecrementDesiredCapacity=False
    )
    return {
        "name": name,
        "pid": instance["InstanceId"],
        "instance_id": instance["InstanceId"],
        "zone": instance["AvailabilityZone"],
        "group": g["AutoScalingGroupName"],
        "signal": "SIGKILL",
        "time": at,
    }


def ensure_running(name: str, outputs: str | None = None, stack: str | None = None) -> dict[str, Any]:
    """A rollback with nothing to start: the group replaces a lost instance itself. Says where it stands."""
    g = resources.group(resolve(outputs, stack))
    return {
        "name": name,
        "in_service": len(resources.in_service(g)),
        "desired": g["DesiredCapacity"],
        "time": time.time(),
    }


# --- the high-load procedure (000 Emergency Procedures: High Load) ---------------------------------------------
def scale_instances(
    count: int, timeout_s: float = 900, outputs: str | None = None, stack: str | None = None
) -> dict[str, Any]:
    """The group's desired capacity set to ``count`` (``aws autoscaling set-desired-capacity``, 3 to 6 and
    back), then awaited: ``count`` instances in service and healthy in the load balancer."""
    t = resolve(outputs, stack)
    g = resources.group(t)
    if not g["MinSize"] <= count <= g["MaxSize"]:
        raise FaultError(
            f"group {g['AutoScalingGroupName']} holds {g['MinSize']} to {g['MaxSize']} instances, not {count}"
        )
    at = time.time()
    t.client("autoscaling").set_desired_capacity(
        AutoScalingGroupName=g["AutoScalingGroupName"], DesiredCapacity=count, HonorCooldown=False
    )
    done = probes.wait_for_capacity(count, timeout_s, at, outputs, stack)
    return {"name": "fleet", "from": g["DesiredCapacity"], "to": count, "seconds": done["seconds"], "time": at}


# --- database failover (000 Database Issues) ------------------------------------------------------------------
def kill_database_primary(outputs: str | None = None, stack: str | None = None) -> dict[str, Any]:
    """A forced Multi-AZ failover: the primary rebooted with ``ForceFailover``, so the standby in another zone
    takes over the writer endpoint. ``member`` is the zone the primary ran in (pass it as ``old`` to
    ``wait_for_new_database_primary``); the writes' RTO and RPO are the drill's writer's, through the endpoint."""
    t = resolve(outputs, stack)
    db = resources.db_instance(t)
    identifier = db["DBInstanceIdentifier"]
    if not db.get("MultiAZ"):
        raise FaultError(f"{identifier} is not Multi-AZ: there is no standby to fail over to (db.multi_az)")
    if db["DBInstanceStatus"] != "available":
        raise FaultError(f"{identifier} is {db['DBInstanceStatus']}, not available: RDS reboots only an available one")
    at = time.time()
    t.client("rds").reboot_db_instance(DBInstanceIdentifier=identifier, ForceFailover=True)
    return {
        "name": identifier,
        "member": db["AvailabilityZone"],
        "standby": db.get("SecondaryAvailabilityZone"),
        "time": at,
    }


# --- cache failover (000 ElastiCache Redis) ----------------------------------------------------------------------
def freeze_redis_primary(outputs: str | None = None, stack: str | None = None) -> dict[str, Any]:
    """ElastiCache's TestFailover on the primary's node group: the primary is lost and a replica promoted, as
    when its node fails. ``primary`` is the node it was (pass it as ``old`` to ``wait_for_new_redis_primary``).
    AWS allows a few test failovers per day and group."""
    t = resolve(outputs, stack)
    rg = resources.replication_group(t)
    group_id = rg["ReplicationGroupId"]
    if rg.get("AutomaticFailover") != "enabled":
        raise FaultError(f"replication group {group_id} has no automatic failover: nothing would take over")
    primary, node_group = resources.primary_member(rg), resources.node_group(rg)["NodeGroupId"]
    at = time.time()
    t.client("elasticache").test_failover(ReplicationGroupId=group_id, NodeGroupId=node_group)
    return {"name": group_id, "primary": primary, "node_group": node_group, "time": at}


def resume_frozen(outputs: str | None = None, stack: str | None = None) -> dict[str, Any]:
    """A rollback with nothing to resume: a failed-over node rejoins as a replica by itself."""
    resolve(outputs, stack)  # the stack still named: a rollback must not pass for one that could not run
    return {"resumed": [], "time": time.time()}


# --- the job queue's consumers and messages -------------------------------------------------------------------
def _workers(verb: str, t: Target, timeout_s: float) -> dict[str, Any]:
    """``systemctl <verb>`` the worker unit on every in-service instance, through SSM Run Command."""
    ids = resources.in_service(resources.group(t))
    if not ids:
        raise FaultError("no instance in service to run the workers' command on")
    at = time.time()
    done = commands.run(
        t, ids, [f"systemctl {verb} {commands.WORKER_UNIT}"], f"pynomaly drill: {verb} workers", timeout_s
    )
    if failed := {i: s for i, s in done["statuses"].items() if s != commands.SUCCESS}:
        raise FaultError(f"systemctl {verb} {commands.WORKER_UNIT} did not succeed on {failed} ({done['command_id']})")
    return {"names": ids, "command_id": done["command_id"], "time": at}


def stop_workers(
    timeout_s: float = WORKER_COMMAND_TIMEOUT_S, outputs: str | None = None, stack: str | None = None
) -> dict[str, Any]:
    """Every queue consumer stopped (systemd's SIGTERM: each hands its in-flight messages back), as a failed
    worker deployment. An instance the group launches meanwhile starts its own worker."""
    return _workers("stop", resolve(outputs, stack), timeout_s)


def start_workers(
    timeout_s: float = WORKER_COMMAND_TIMEOUT_S, outputs: str | None = None, stack: str | None = None
) -> dict[str, Any]:
    """Every queue consumer running again (idempotent: a rollback)."""
    return _workers("start", resolve(outputs, stack), timeout_s)


def send_poison_message(marker: str, outputs: str | None = None, stack: str | None = None) -> dict[str, Any]:
    """A message no worker can process (not a job), straight onto the job queue; ``marker`` is in its body so
    :func:`remove_dead_letters` finds it again."""
    t = resolve(outputs, stack)
    at = time.time()
    reply = t.client("sqs").send_message(QueueUrl=t.outputs.queue_url, MessageBody=queue_messages.poison_body(marker))
    return {"message_id": reply["MessageId"], "marker": marker, "time": at}


def remove_dead_letters(
    marker: str, timeout_s: float = 30, outputs: str | None = None, stack: str | None = None
) -> dict[str, Any]:
    """Delete the dead letters whose body holds ``marker`` (a drill's own), leaving every other one in place
    (idempotent: a rollback)."""
    t = resolve(outputs, stack)
    deleted = queue_messages.remove_marked(t.client("sqs"), t.outputs.dead_letter_queue_url, marker, timeout_s)
    return {"deleted": deleted, "time": time.time()}


# --- maintenance mode (002 "Redirect traffic to maintenance page") ------------------------------------------------
def _switch(t: Target, actions: list[dict[str, Any]], value: str) -> dict[str, Any]:
    """The HTTPS listener's default action, which infra/load_balancer.py declares by ``lb.maintenance_mode``."""
    arn = t.value(keys.HTTPS_LISTENER_ARN)
    at = time.time()
    t.client("elbv2").modify_listener(ListenerArn=arn, DefaultActions=actions)
    return {"name": "load balancer", "maintenance": value, "listener": arn, "time": at}


def maintenance_on(outputs: str | None = None, stack: str | None = None) -> dict[str, Any]:
    """The load balancer answers every request with the maintenance page (503), the fleet untouched."""
    page = {
        "ContentType": maintenance.CONTENT_TYPE,
        "StatusCode": maintenance.STATUS_CODE,
        "MessageBody": maintenance.PAGE,
    }
    return _switch(resolve(outputs, stack), [{"Type": "fixed-response", "FixedResponseConfig": page}], "on")


def maintenance_off(outputs: str | None = None, stack: str | None = None) -> dict[str, Any]:
    """The load balancer forwards to the fleet's target group again (idempotent: a rollback)."""
    t = resolve(outputs, stack)
    forward = {"Type": "forward", "TargetGroupArn": resources.target_group_arn(resources.group(t))}
    return _switch(t, [forward], "off")


# --- data corruption (001 "Data Corruption") --------------------------------------------------------------------
def corrupt_objects(prefix: str, outputs: str | None = None, stack: str | None = None) -> dict[str, Any]:
    """Of the objects under ``prefix`` in the artifacts bucket, every other one deleted and the rest overwritten
    (pynomaly_ops/object_versions.py). Only the drill's own objects: the prefix must be under
    ``drills/object-restore/``, as the runner's permissions allow (docs/aws-drill-permissions.json)."""
    if not prefix.startswith(object_versions.DRILL_OBJECTS):
        raise FaultError(f"on a real stack only the drill's objects are corrupted: {prefix!r} is not under "
                         f"{object_versions.DRILL_OBJECTS}")  # fmt: skip
    t = resolve(outputs, stack)
    try:
        return object_versions.corrupt(t.client("s3"), t.outputs.artifacts_bucket, prefix)
    except object_versions.NothingToCorrupt as exc:
        raise FaultError(str(exc)) from None
