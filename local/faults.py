"""Break the local stack: kill, freeze and resume processes, lose the database primary, change the fleet's size.

Plain typed functions with JSON-friendly arguments, called by the tests and by Chaos Toolkit experiments
alike (``{"type": "python", "module": "local.faults", "func": "kill_database_primary"}``). Each takes
``state_dir`` (default: as the `local` commands resolve it), raises when it cannot act, and returns a dict
saying what it did, with the wall-clock ``time`` of the fault (pass it as ``since`` to the probes' waits).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from psycopg import sql

from local import aws, health, pitr, probes, recovery, render
from local.procs import kill_all, stack_pids
from local.programs import PATRONI_MEMBERS, Program, api_program, patroni_program
from local.recorders import WriteRecorder
from local.stack import Stack, running_stack
from local.waiting import Timeout, wait_for
from local.wiring import APP_DB, APP_DB_USER, DEAD_PEER_DETECTION
from pynomaly_ops import object_versions, queue_messages
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
    client = health.redis_client(layout.regional, layout.ports["redis_writer"], layout.secrets["redis_password"])
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
    reply = aws.sqs(wiring).send_message(QueueUrl=url, MessageBody=queue_messages.poison_body(marker))
    return {"message_id": reply["MessageId"], "marker": marker, "time": at}


def remove_dead_letters(marker: str, timeout_s: float = 30, state_dir: str | None = None) -> dict[str, Any]:
    """Delete the dead letters whose body holds ``marker`` (a drill's own), leaving every other one in place
    (idempotent: a rollback). Others received on the way are made visible again at once."""
    wiring = running_stack(state_dir).wiring
    deleted = queue_messages.remove_marked(aws.sqs(wiring), wiring.queue_url(wiring.queue_names[1]), marker, timeout_s)
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
    and the rest overwritten with garbage (pynomaly_ops/object_versions.py)."""
    wiring = running_stack(state_dir).wiring
    try:
        return object_versions.corrupt(aws.s3(wiring), wiring.artifacts_bucket, prefix)
    except object_versions.NothingToCorrupt as exc:
        raise FaultError(str(exc)) from None


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


# --- availability zones (a zoned stack: `local up --zones`) -------------------------------------------
SPLIT_BRAIN_TABLE = "drill_split_brain"
# The figures a step returns, by function: a drill's objectives read them (tests check each has a source).
FIGURES = {"stop_split_brain_writes": ("split-brain writes acknowledged", "split-brain writes surviving")}
SPLIT_BRAIN_STOP_S = 40  # a write hanging on the old primary ends with its demotion, or at the writer's cap


def _zoned(state_dir: str | None) -> Stack:
    stack = running_stack(state_dir)
    if not stack.layout.zoned:
        raise FaultError(
            "this local stack has no zones to break: the AZ faults need `pynomaly-ops local up --zones` (as root;"
            " an existing unzoned stack first needs `local down --purge`)"
        )
    return stack


def _zone_and_member(zone: str | None, state_dir: str | None) -> tuple[str, str | None]:
    """The zone asked for, else the database primary's (the worst to lose); and its database member, if any."""
    if zone is None:
        try:
            zone = PATRONI_MEMBERS[probes.patroni_leader(state_dir)]
        except (probes.ProbeError, ConnectionError) as exc:
            raise FaultError(f"no primary to find the zone of: {exc}") from None
    member = next((m for m, z in PATRONI_MEMBERS.items() if z == zone), None)
    return zone, member


def _split_brain_dir(stack: Stack) -> Path:
    return stack.layout.run_dir / "split-brain"


def _start_split_brain_writer(stack: Stack, zone: str) -> int:
    """A client in ``zone`` writing straight to the zone's member (any role), running before the cut."""
    layout = stack.layout
    d = _split_brain_dir(stack)
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    dsn = (
        f"host={layout.zone_address(zone)} port={layout.ports['postgres']} dbname={APP_DB} user={APP_DB_USER}"
        f" target_session_attrs=any connect_timeout=2 {DEAD_PEER_DETECTION}"
    )
    out = d / "attempts.jsonl"
    command = [sys.executable, "-m", "local.split_brain", "--dsn", dsn, "--table", SPLIT_BRAIN_TABLE, "--out", str(out)]
    env = os.environ | {"PGPASSWORD": layout.secrets["app_db_password"]}
    with (d / "writer.log").open("w") as log:
        process = subprocess.Popen(stack.zones.enter(zone, command), env=env, stdout=log, stderr=log)
    (d / "pid").write_text(f"{process.pid}\n")
    try:
        wait_for("the split-brain writer's first writes", lambda: Path(f"{out}.ready").exists() or process.poll(), 30)
    except Timeout:
        process.kill()
        raise FaultError(
            f"the split-brain writer wrote nothing in 30s: {(d / 'writer.log').read_text()[-500:]}"
        ) from None
    if process.poll() is not None:
        raise FaultError(f"the split-brain writer exited: {(d / 'writer.log').read_text()[-500:]}")
    return process.pid


def partition_zone(zone: str | None = None, split_brain: bool = True, state_dir: str | None = None) -> dict[str, Any]:
    """Cut ``zone`` (default: the database primary's) off the network: its cable down, everything inside
    running. With ``split_brain``, a client inside the zone keeps writing to the zone's member through the cut
    (count it with :func:`stop_split_brain_writes`). Returns the zone and its ``member``."""
    stack = _zoned(state_dir)
    zone, member = _zone_and_member(zone, state_dir)
    writer = _start_split_brain_writer(stack, zone) if split_brain and member else None
    stack.zones.cut(zone)
    at = time.time()
    if writer is not None:
        (_split_brain_dir(stack) / "cut_at").write_text(f"{at}\n")
    return {"name": f"zone {zone}", "zone": zone, "member": member, "split_brain_writer": writer, "time": at}


def heal_zone(zone: str | None = None, state_dir: str | None = None) -> dict[str, Any]:
    """Cable ``zone`` back (default: every cut zone). Idempotent: a rollback. Returns the leader at the heal."""
    stack = running_stack(state_dir)
    zones = [zone] if zone else _zones_in(stack, "cut")
    for z in zones:
        stack.zones.heal(z)
    at = time.time()
    return {"healed": zones, "leader": _leader_or_none(state_dir), "time": at}


def _zones_in(stack: Stack, link_state: str) -> list[str]:
    """The zones whose link is in ``link_state``; none on a stack without zones (a rollback has nothing to undo)."""
    return [z for z in stack.layout.zones if stack.layout.zoned and stack.zones.link_state(z) == link_state]


def _leader_or_none(state_dir: str | None) -> str | None:
    """The database leader now, if there is one: what a zone coming back is measured against."""
    try:
        return probes.patroni_leader(state_dir)
    except (probes.ProbeError, ConnectionError):
        return None


def power_off_zone(zone: str | None = None, state_dir: str | None = None) -> dict[str, Any]:
    """An AZ power interruption: every process in ``zone`` (default: the database primary's) SIGKILLed at
    once and its cable down; the supervisor's restarts wait for :func:`power_on_zone`."""
    stack = _zoned(state_dir)
    zone, member = _zone_and_member(zone, state_dir)
    killed = stack.zones.power_off(zone)
    return {
        "name": f"zone {zone}",
        "zone": zone,
        "member": member,
        "processes_killed": len(killed),
        "time": time.time(),
    }


def power_on_zone(zone: str | None = None, state_dir: str | None = None) -> dict[str, Any]:
    """Power back (default: every zone that is off). Idempotent: a rollback; the zone's servers then start.
    Returns the database leader at power-on."""
    stack = running_stack(state_dir)
    zones = [zone] if zone else _zones_in(stack, "powered off")
    for z in zones:
        stack.zones.power_on(z)
    at = time.time()
    return {"powered_on": zones, "leader": _leader_or_none(state_dir), "time": at}


def stop_split_brain_writes(count: bool = True, state_dir: str | None = None) -> dict[str, Any]:
    """Stop the split-brain writer (idempotent: a rollback) and, with ``count``, once the cluster is whole
    again: how many of its writes started after the cut were acknowledged, and how many survive."""
    stack = running_stack(state_dir)
    d = _split_brain_dir(stack)
    if not (d / "pid").exists():
        return {"stopped": False, "figures": {}}
    pid = int((d / "pid").read_text())
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(Timeout):
        wait_for("the split-brain writer to stop", lambda: _gone(pid), SPLIT_BRAIN_STOP_S)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    (d / "pid").unlink()
    if not count:
        return {"stopped": True, "figures": {}}
    cut_at = float((d / "cut_at").read_text())
    attempts = [json.loads(line) for line in (d / "attempts.jsonl").read_text().splitlines() if line]
    during = [a for a in attempts if a["at"] >= cut_at]
    recorder = WriteRecorder(stack.wiring.db_dsn(), SPLIT_BRAIN_TABLE)
    surviving = {a["id"] for a in during} & recorder.stored_ids()
    recorder.drop_table()
    counts = (sum(a["ok"] for a in during), len(surviving))
    figures = dict(zip(FIGURES["stop_split_brain_writes"], counts, strict=True))
    return {"stopped": True, "attempts_during_cut": len(during), "figures": figures, "time": time.time()}


def _gone(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # our child: reap it
        return waited == pid
    except ChildProcessError:  # started by another process (a rollback in a new run)
        return not Path(f"/proc/{pid}").exists()
