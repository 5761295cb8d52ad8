"""Break the local stack: kill, freeze and resume processes, lose the database primary, change the fleet's size.

Plain typed functions with JSON-friendly arguments, called by the tests and by Chaos Toolkit experiments
alike (``{"type": "python", "module": "local.faults", "func": "kill_database_primary"}``). Each takes
``state_dir`` (default: as the `local` commands resolve it), raises when it cannot act, and returns a dict
saying what it did, with the wall-clock ``time`` of the fault (pass it as ``since`` to the probes' waits).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from psycopg import sql

from local import aws, health, pitr, probes, recovery, render
from local.procs import kill_all, stack_pids
from local.programs import PATRONI_MEMBERS, Program, api_program, patroni_program
from local.stack import Stack, running_stack
from pynomaly_ops.environment import environment


class FaultError(RuntimeError):
    """The fault could not be injected (unknown program, nothing running under that name...)."""


def parse_signal(sig: str | int) -> signal.Signals:
    """``"SIGKILL"``, ``"KILL"``, ``"kill"`` or ``9``."""
    try:
        if isinstance(sig, int):
            return signal.Signals(sig)
        name = sig.strip().upper()
        return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
    except (KeyError, ValueError):
        raise ValueError(f"unknown signal {sig!r}") from None


def _running_pid(name: str, state_dir: str | None) -> int:
    try:
        pid = probes.process_pid(name, state_dir)
    except probes.ProbeError as exc:
        raise FaultError(str(exc)) from None
    if pid is None:
        raise FaultError(f"{name} is not running: nothing to signal")
    return pid


def _signal(name: str, pid: int, sig: signal.Signals) -> dict[str, Any]:
    os.kill(pid, sig)
    return {"name": name, "pid": pid, "signal": sig.name, "time": time.time()}


def kill_process(name: str, sig: str | int = "SIGKILL", state_dir: str | None = None) -> dict[str, Any]:
    """Send ``sig`` to supervisord program ``name`` (SIGKILL: a lost host; supervisord starts a new one)."""
    return _signal(name, _running_pid(name, state_dir), parse_signal(sig))


def freeze_process(name: str, state_dir: str | None = None) -> dict[str, Any]:
    """SIGSTOP: the process holds its sockets and answers nothing, as a hung host; supervisord sees it running."""
    return kill_process(name, signal.SIGSTOP, state_dir)


def resume_process(name: str, state_dir: str | None = None) -> dict[str, Any]:
    """SIGCONT a frozen process."""
    return kill_process(name, signal.SIGCONT, state_dir)


def kill_database_member(member: str, state_dir: str | None = None) -> dict[str, Any]:
    """SIGKILL a Patroni member and its postmaster: a lost database host (PostgreSQL would outlive Patroni)."""
    if member not in PATRONI_MEMBERS:
        raise FaultError(f"{member!r} is not a database member; one of {sorted(PATRONI_MEMBERS)}")
    program = patroni_program(member)
    patroni_pid = _running_pid(program, state_dir)
    postmaster = probes.postmaster_pid(member, state_dir)  # both read before either dies
    done = _signal(program, patroni_pid, signal.SIGKILL)
    if postmaster is not None:
        try:
            os.kill(postmaster, signal.SIGKILL)
        except ProcessLookupError:
            postmaster = None  # it had already gone
    return done | {"member": member, "postmaster_pid": postmaster}


def kill_database_primary(state_dir: str | None = None) -> dict[str, Any]:
    """Lose the PostgreSQL primary's host; returns which member it was (``member``)."""
    try:
        leader = probes.patroni_leader(state_dir)
    except (probes.ProbeError, ConnectionError) as exc:
        raise FaultError(f"no primary to kill: {exc}") from None
    return kill_database_member(leader, state_dir)


def kill_supervisord(state_dir: str | None = None) -> dict[str, Any]:
    """SIGKILL supervisord itself, as a crashed host: its programs live on as orphans, its socket and pid file
    stay behind, and nothing restarts what dies next (the next `local up` clears it all)."""
    pid = running_stack(state_dir).supervisor.pid()
    if pid is None:
        raise FaultError("supervisord is not running: nothing to kill")
    return _signal("supervisord", pid, signal.SIGKILL)


def scale_instances(count: int, state_dir: str | None = None) -> dict[str, Any]:
    """Change the API instance count (started and checked before they take traffic, drained before removal)."""
    stack = running_stack(state_dir)
    before, started = stack.layout.instances, time.monotonic()
    at = time.time()
    stack.scale(count)
    return {"name": "fleet", "from": before, "to": count, "seconds": time.monotonic() - started, "time": at}


def flush_cache(state_dir: str | None = None) -> dict[str, Any]:
    """FLUSHALL on the Redis primary, through the primary endpoint (001: "Clear Redis cache")."""
    layout = running_stack(state_dir).layout
    client = health.redis_client(layout.regional, layout.ports["redis_writer"])
    at = time.time()
    keys = int(client.dbsize())
    client.flushall()
    return {"name": "redis primary", "keys_flushed": keys, "time": at}


def ensure_running(name: str, state_dir: str | None = None) -> dict[str, Any]:
    """Start program ``name`` if supervisord is not running it (a rollback: supervisord may have given up)."""
    stack = running_stack(state_dir)
    was = stack.supervisor.info()[name]["statename"]
    if was not in ("RUNNING", "STARTING"):
        stack.supervisor.start_programs([name])
    return {"name": name, "was": was, "time": time.time()}


# --- the job queue's consumers and messages -------------------------------------------------------
def _workers(stack: Stack) -> list[str]:
    return sorted(name for name in stack.supervisor.info() if name.startswith("worker-"))


def stop_workers(state_dir: str | None = None) -> dict[str, Any]:
    """Every queue consumer stopped (SIGTERM: each hands its in-flight messages back), as a failed worker
    deployment or a worker fleet scaled to zero; supervisord does not restart a stopped program."""
    stack = running_stack(state_dir)
    names, at = _workers(stack), time.time()
    for name in names:
        stack.supervisor.stop_program(name)
    return {"names": names, "time": at}


def start_workers(state_dir: str | None = None) -> dict[str, Any]:
    """Every queue consumer running again (idempotent: a rollback)."""
    stack = running_stack(state_dir)
    names, at = _workers(stack), time.time()
    stack.supervisor.start_programs(names)
    return {"names": names, "time": at}


def send_poison_message(marker: str, state_dir: str | None = None) -> dict[str, Any]:
    """A message no worker can process (not a job), straight onto the job queue; ``marker`` is in its body so
    :func:`remove_dead_letters` finds it again."""
    wiring = running_stack(state_dir).wiring
    url, at = wiring.queue_url(wiring.queue_names[0]), time.time()
    reply = aws.sqs(wiring).send_message(QueueUrl=url, MessageBody=f"{marker}: not a job")
    return {"message_id": reply["MessageId"], "marker": marker, "time": at}


def remove_dead_letters(marker: str, timeout_s: float = 30, state_dir: str | None = None) -> dict[str, Any]:
    """Delete the dead letters whose body holds ``marker`` (a drill's own), leaving every other one in place
    (idempotent: a rollback). Others received on the way are made visible again at once."""
    wiring = running_stack(state_dir).wiring
    client, url = aws.sqs(wiring), wiring.queue_url(wiring.queue_names[1])
    deleted, deadline = 0, time.monotonic() + timeout_s
    while aws.queue_depths(wiring, client)[aws.DEAD_LETTER_QUEUE].visible and time.monotonic() < deadline:
        messages = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=5).get("Messages")
        others = 0
        for m in messages or []:
            if marker in m["Body"]:
                client.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
                deleted += 1
            else:
                client.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
                others += 1
        if others == len(messages or []):  # only others' dead letters left: they stay
            break
    return {"deleted": deleted, "time": time.time()}


def freeze_redis_primary(state_dir: str | None = None) -> dict[str, Any]:
    """SIGSTOP the Redis primary: it stops answering, as a lost cache node (a killed one restarts too fast)."""
    primary = probes.redis_primary(state_dir)
    return freeze_process(probes.redis_primary_program(state_dir), state_dir) | {"primary": primary}


def resume_frozen(state_dir: str | None = None) -> dict[str, Any]:
    """SIGCONT every program of the stack that is stopped (a rollback for any freeze)."""
    stack = running_stack(state_dir)
    resumed = []
    for name, info in stack.supervisor.info().items():
        pid = info.get("pid") or 0
        if pid and _stopped(pid):
            os.kill(pid, signal.SIGCONT)
            resumed.append(name)
    return {"resumed": resumed, "time": time.time()}


def _stopped(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "T"  # the state field, after the command name


def maintenance_on(state_dir: str | None = None) -> dict[str, Any]:
    """002 "Redirect traffic to maintenance page": the load balancer answers every request with the page."""
    return _maintenance("on", state_dir)


def maintenance_off(state_dir: str | None = None) -> dict[str, Any]:
    """Normal service: the load balancer forwards to the fleet again (idempotent: a rollback)."""
    return _maintenance("off", state_dir)


def _maintenance(value: str, state_dir: str | None) -> dict[str, Any]:
    stack = running_stack(state_dir)
    at = time.time()
    stack.haproxy.set_flag(stack.layout.haproxy_flags, "maintenance", value)
    return {"name": "load balancer", "maintenance": value, "time": at}


# --- releases: what a deploy changes on one instance ------------------------------------------
def deploy_release(name: str, broken: bool = True, state_dir: str | None = None) -> dict[str, Any]:
    """Roll a release out to API instance ``name`` (supervisord restarts it with the new definition).

    ``broken``: a release with an invalid configuration (a database pool whose minimum exceeds its maximum),
    the commonest bad deploy: the service refuses to start, so its /health never answers and supervisord
    keeps restarting it, as a crash-looping release does."""
    stack = running_stack(state_dir)
    program = _instance_program(stack, name)
    if broken:
        program = replace(program, env=program.env | environment(db_pool_min=2, db_pool_max=1))
    return _roll_out(stack, program, "broken" if broken else "current")


def rollback_release(name: str, state_dir: str | None = None) -> dict[str, Any]:
    """Put instance ``name`` back on the stack's current release (idempotent: nothing changes when it is on it)."""
    stack = running_stack(state_dir)
    return _roll_out(stack, _instance_program(stack, name), "previous")


def _instance_program(stack: Stack, name: str) -> Program:
    index = int(name.removeprefix("api-")) if name.startswith("api-") else -1
    if not 0 <= index < stack.layout.instances:
        raise FaultError(f"no API instance {name!r}: the instances are api-0 to api-{stack.layout.instances - 1}")
    return api_program(stack.layout, index, stack.wiring.service_env())


def _roll_out(stack: Stack, program: Program, release: str) -> dict[str, Any]:
    at = time.time()
    render.write_program(stack.layout, program)
    changes = stack.supervisor.apply_config()
    stack.supervisor.start_programs([program.name])  # programs are not autostarted: the stack starts them
    return {"name": program.name, "release": release, "changes": changes, "time": at}


def corrupt_objects(prefix: str, state_dir: str | None = None) -> dict[str, Any]:
    """001 "Data Corruption" in the artifacts bucket: of the objects under ``prefix``, every other one deleted
    (a delete marker) and the rest overwritten with garbage. Starts on a whole second: S3 dates versions to
    the second, and the restore tells good versions from bad by that date (the fault's ``time``)."""
    wiring = running_stack(state_dir).wiring
    s3, bucket = aws.s3(wiring), wiring.artifacts_bucket
    keys = sorted(o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                  for o in page.get("Contents", []))  # fmt: skip
    if not keys:
        raise FaultError(f"no objects under s3://{bucket}/{prefix} to corrupt")
    at = math.floor(time.time()) + 1
    time.sleep(max(0.0, at - time.time()))  # to the next whole second (see above), not a wait for a state
    deleted, overwritten = keys[::2], keys[1::2]
    for key in deleted:
        s3.delete_object(Bucket=bucket, Key=key)
    for key in overwritten:
        s3.put_object(Bucket=bucket, Key=key, Body=b"\x00corrupted\x00")
    return {"name": f"s3://{bucket}/{prefix}", "deleted": len(deleted), "overwritten": len(overwritten), "time": at}


def delete_drill_rows(state_dir: str | None = None) -> dict[str, Any]:
    """001 "Data Corruption": a DELETE of every row of a table, the drill's own (see :data:`local.pitr.PITR_TABLE`)."""
    wiring = running_stack(state_dir).wiring
    with recovery.connect_superuser(wiring, autocommit=True) as conn:
        deleted = conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(pitr.PITR_TABLE))).rowcount
        lsn = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]  # type: ignore[index]
    return {"name": pitr.PITR_TABLE, "rows_deleted": deleted, "lsn": lsn, "time": time.time()}


def destroy_stack(state_dir: str | None = None) -> dict[str, Any]:
    """001/004 "Disaster": the whole site lost at once. Every process of the stack SIGKILLed (nothing shuts
    down cleanly, nothing more is archived), then its state and database directories deleted, as `local down
    --purge` deletes them; the off-site copy of the backups (local/vault.py) and the backup key stay."""
    stack = running_stack(state_dir)
    at, pids = time.time(), list(stack_pids(stack.layout))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    survivors = kill_all(pids, grace_s=10)
    if survivors:
        raise FaultError(f"processes of the stack survived SIGKILL: {survivors}")
    stack.purge()
    return {"name": str(stack.layout.state_dir), "processes_killed": len(pids), "time": at}
