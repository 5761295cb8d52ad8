"""up / status / down / scale / outputs: the local stack's life cycle."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from local import etcd, health, render
from local.aws import ensure_resources
from local.database import ensure_app_database
from local.haproxy import HAProxy
from local.layout import Layout, state_dir_from
from local.procs import holder, kill_all, listeners, stack_pids
from local.programs import (
    BARMAN_BIN,
    BARMAN_PACKAGE,
    ETCD_MEMBERS,
    FLEET_GROUP,
    PATRONI_MEMBERS,
    PG_BIN,
    START_NOW_FILE,
    Phase,
    Program,
    all_programs,
    api_program,
    database_programs,
    patroni_program,
)
from local.secretfile import write_secret
from local.supervisor import Supervisor, log_tail
from local.waiting import Timeout, wait_for
from local.wiring import Wiring
from local.zones import ZoneError, Zones
from pynomaly_ops.baselines import load

PHASE_TIMEOUT_S = {Phase.BASE: 30, Phase.DATABASE: 60, Phase.APP: 60}
DRAIN_TIMEOUT_S = 30
# A database rebuilt from the archive: the base backup's download and the replay of every segment since.
RESTORE_TIMEOUT_S = 600
# A primary's last WAL segment reaches the archive within seconds; past this the stop goes on without it.
POSTMASTER_STOP_S = 30

Say = Callable[[str], None]


class StackError(RuntimeError):
    """The stack cannot be brought to the wanted state; the message says why and what to do."""


@dataclass
class Stack:
    layout: Layout
    say: Say = print

    @property
    def wiring(self) -> Wiring:
        return Wiring(self.layout)

    @property
    def supervisor(self) -> Supervisor:
        return Supervisor(self.layout)

    @property
    def haproxy(self) -> HAProxy:
        return HAProxy(self.layout.haproxy_socket)

    @property
    def zones(self) -> Zones:
        return Zones(self.layout)

    def programs(self) -> list[Program]:
        return all_programs(self.layout, self.wiring.service_env())

    def _in_this_namespace(self, sockets: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
        """The sockets this namespace can check: a zone's live in its own (made fresh, or emptied of orphans)."""
        zonal = set(self.layout.zones.values()) if self.layout.zoned else set()
        return [s for s in sockets if s[1] not in zonal]

    # --- up ----------------------------------------------------------------
    def up(self, restore: Callable[[Stack], object] | None = None) -> float:
        """Start what is not running and wait until every piece is healthy; returns seconds taken.

        ``restore`` (a rebuild from backups, local/disaster.py) runs once the S3 stand-in is up and before the
        database starts: it puts back the archive the database is then built from."""
        started = time.monotonic()
        programs = self.programs()
        check_binaries(programs)
        if self.layout.zoned:
            try:
                made = self.zones.create()
            except ZoneError as exc:
                raise StackError(str(exc)) from None
            self.say(f"zones a, b, c on bridge {self.zones.bridge}: {', '.join(made) or 'already in place'}")
        self._prepare(programs)
        # Start early, wait late: the service retries its database and queue, so
        # its slow imports overlap the standby's copy and the other servers' start.
        self._start_phase(programs, Phase.BASE)
        self._wait_healthy([p for p in programs if p.name in ETCD_MEMBERS], "etcd quorum")
        self._ensure_etcd_auth()  # before Patroni, which logs in as its own etcd user
        if restore is not None:
            self._wait_healthy([p for p in programs if p.name == "moto"], "S3/SQS stand-in")
            restore(self)
        self._start_database(RESTORE_TIMEOUT_S if self.layout.bootstrap_backup else PHASE_TIMEOUT_S[Phase.DATABASE])
        self._start_phase(programs, Phase.APP)
        self._provision({p.name: p for p in programs}["moto"])
        self._wait_healthy([p for p in programs if p.phase == Phase.BASE], "base servers")
        self._wait_healthy([p for p in programs if p.phase == Phase.APP], "API instances and workers")
        self._wait_in_rotation(programs)
        self.write_outputs()
        return time.monotonic() - started

    def _prepare(self, programs: list[Program]) -> None:
        """Cold: clear a crashed run, render everything, start supervisord.
        Warm: apply only what changed (an unchanged stack is left alone)."""
        sup = self.supervisor
        if not sup.running():
            self._cold_start(programs)
            return
        render.write_secrets(self.layout)
        render.write_supervisor(self.layout, programs)
        changes = sup.apply_config()
        self.say(f"supervisord already running; program changes: {', '.join(changes) or 'none'}")
        self._reload(render.refresh_live_configs(self.layout, programs))

    def _ensure_etcd_auth(self) -> None:
        """etcd's users and authentication (idempotent); retried while the members settle their leader, but not
        when etcd holds another root password (a verdict: its data is not this stack's)."""
        refused: list[str] = []

        def enabled() -> bool:
            try:
                etcd.ensure_auth(self.layout)
            except etcd.ForeignEtcd as exc:  # not to be waited out
                refused.append(str(exc))
            return True

        self._wait("etcd authentication", enabled, PHASE_TIMEOUT_S[Phase.BASE], "etcd-a")
        if refused:
            raise StackError(refused[0])

    def _start_database(self, timeout_s: float) -> None:
        self._start_phase([], Phase.DATABASE)
        # initdb (or a restore) first, alone: on two cores it is several times slower while the
        # service's instances import their libraries.
        self._wait(
            "PostgreSQL primary",
            lambda: "leader" in health.patroni_roles(self.layout).values(),
            timeout_s,
            "patroni-a",
        )

    def _provision(self, moto: Program) -> None:
        """The Multi-AZ shape, then the application's database, queues and buckets."""
        ready = lambda: health.database_ready(self.layout)  # noqa: E731
        self._wait("PostgreSQL leader + synchronous standby", ready, PHASE_TIMEOUT_S[Phase.DATABASE], "patroni-a")
        self._wait("S3/SQS stand-in", lambda: health.probe(moto), PHASE_TIMEOUT_S[Phase.BASE], "moto")
        # The leader's role shows before its promotion completes: retry until writable.
        self._wait("application database and role", self._ensure_app_database, 30, "patroni-a")
        ensure_resources(self.wiring)
        self.say("database, role, queues and buckets in place")

    def _cold_start(self, programs: list[Program]) -> None:
        orphans = stack_pids(self.layout)
        if orphans:
            self.say(f"ending {len(orphans)} process(es) left by a crashed run")
            survivors = kill_all(list(orphans))
            if survivors:
                raise StackError(f"could not end processes of a previous run: {survivors}; kill them and retry")
        self._clear_stale_files()
        check_ports(self._in_this_namespace(bound_ports(self.layout, programs)))
        render.render_all(self.layout, programs)
        self.supervisor.start()
        self.say("supervisord started")

    def _reload(self, programs: list[str]) -> None:
        """Apply changed configs without a restart: HAProxy's master re-executes
        with the listeners handed over (USR2); Prometheus reloads on SIGHUP (it serves no lifecycle API)."""
        if "haproxy" in programs:
            self.supervisor.signal("haproxy", "USR2")
        if "prometheus" in programs:
            self.supervisor.signal("prometheus", "HUP")
        if programs:
            self.say(f"reloaded: {', '.join(programs)}")

    def _ensure_app_database(self) -> bool:
        ensure_app_database(self.wiring)
        return True

    def _clear_stale_files(self) -> None:
        """Pid files and sockets of a crashed run (no process of ours is alive now)."""
        stale = [self.layout.supervisor_socket, self.layout.haproxy_socket, self.layout.run_dir / "supervisord.pid"]
        stale += [self.layout.member_dir(m) / "data" / "postmaster.pid" for m in PATRONI_MEMBERS]
        for path in stale:
            path.unlink(missing_ok=True)

    def _start_phase(self, programs: list[Program], phase: Phase) -> None:
        if phase == Phase.DATABASE:
            self._start_members_now()
            programs = database_programs(self.layout)
        self.supervisor.start_programs([p.name for p in programs if p.phase == phase])

    def _start_members_now(self) -> None:
        """Tell the Patroni wrappers this start is ours, not a restart after a crash.

        Only members about to start get the flag: one left beside a running member
        would let its next crash restart skip the delay and race the standby.
        """
        active = self.supervisor.active()
        for member in PATRONI_MEMBERS:
            flag = self.layout.member_dir(member) / START_NOW_FILE
            if patroni_program(member) in active:
                flag.unlink(missing_ok=True)
            else:
                render.write(flag, "", 0o644, self.layout.db_user)

    def _wait(self, what: str, ready: Callable[[], object], timeout_s: float, log_of: str) -> None:
        t0 = time.monotonic()
        try:
            wait_for(what, ready, timeout_s)
        except Timeout as exc:
            raise StackError(f"{exc}\n--- last lines of {log_of}.log ---\n{log_tail(self.layout, log_of)}") from None
        self.say(f"{what}: ready ({time.monotonic() - t0:.1f}s)")

    def _wait_healthy(self, programs: list[Program], what: str) -> None:
        timeout_s = PHASE_TIMEOUT_S[max(p.phase for p in programs)]
        pending = {p.name: p for p in programs}

        def all_healthy() -> bool:
            for name, program in list(pending.items()):
                if health.probe(program, self.haproxy.ok):
                    del pending[name]
            return not pending

        t0 = time.monotonic()
        try:
            wait_for(what, all_healthy, timeout_s)
        except Timeout:
            details = "\n".join(f"--- {n}.log ---\n{log_tail(self.layout, n)}" for n in pending)
            raise StackError(f"not healthy after {timeout_s}s: {', '.join(pending)}\n{details}") from None
        self.say(f"{what}: healthy ({time.monotonic() - t0:.1f}s)")

    def _wait_in_rotation(self, programs: list[Program]) -> None:
        fleet = [p.name for p in programs if p.group == FLEET_GROUP]

        def all_up() -> bool:
            status = self.haproxy.server_status()
            return all(status.get(n) == "UP" for n in fleet)

        self._wait("instances in the load balancer", all_up, PHASE_TIMEOUT_S[Phase.APP], "haproxy")

    def write_outputs(self) -> dict:
        data = self.wiring.outputs()
        write_secret(self.layout.outputs_file, json.dumps(data, indent=2) + "\n")  # the API key, the DSN's password
        return data

    # --- status ------------------------------------------------------------
    def status(self) -> list[dict]:
        sup = self.supervisor
        info = sup.info() if sup.running() else {}
        roles = self._roles()
        links = {z: self.zones.link_state(z) for z in self.layout.zones} if self.layout.zoned else {}
        rows = []
        for p in self.programs():
            state = info.get(p.name, {})
            running = state.get("statename") == "RUNNING"
            rows.append(
                {
                    "name": p.name,
                    "zone": p.zone or "-",
                    "link": links.get(p.zone, "-"),
                    "address": f"{p.address}:{p.port}",
                    "state": state.get("statename", "STOPPED" if info else "DOWN"),
                    "pid": state.get("pid") or None,
                    "healthy": running and health.probe(p, self.haproxy.ok),
                    "role": roles.get(p.name, ""),
                }
            )
        return rows

    def _roles(self) -> dict[str, str]:
        """Cluster roles for the status table: Patroni role, Redis role, LB state."""
        roles: dict[str, str] = {}
        try:
            for member, role in health.patroni_roles(self.layout).items():
                roles[patroni_program(member)] = role
        except ConnectionError:
            pass
        sentinels = self.wiring.sentinels
        primary = health.redis_primary(sentinels, self.layout.secrets["redis_password"])
        if primary:
            for name in ("redis-a", "redis-b"):
                zone_addr = self.layout.zone_address(name[-1])
                roles[name] = "primary" if primary[0] == zone_addr else "replica"
        with contextlib.suppress(OSError):
            roles |= {n: f"lb:{s}" for n, s in self.haproxy.server_status().items()}
        return roles

    # --- down --------------------------------------------------------------
    def down(self, purge: bool = False) -> None:
        sup = self.supervisor
        if self.layout.zoned:
            self._reconnect_zones()
        if sup.running():
            pid = sup.pid()
            self._stop_databases()
            sup.rpc.stopAllProcesses(True)
            sup.shutdown()
            if pid:
                wait_for("supervisord to exit", lambda: not Path(f"/proc/{pid}").exists(), 30)
            self.say("supervisord and its programs stopped")
        leftovers = stack_pids(self.layout)
        if leftovers:
            self.say(f"ending {len(leftovers)} leftover process(es)")
            kill_all(list(leftovers))
        self.verify_down()
        if self.layout.zoned:
            try:
                removed = self.zones.remove()
            except ZoneError as exc:
                raise StackError(str(exc)) from None
            self.say(f"zones removed: {', '.join(removed) or 'none was left'}")
        if purge:
            self.purge()

    def _reconnect_zones(self) -> None:
        """A cut zone is cabled back before the stop, so its primary can archive its last WAL; a powered-off
        one stays off (its programs are only waiting to start)."""
        for zone in self.layout.zones:
            if self.zones.link_state(zone) == "cut":
                self.zones.heal(zone)
                self.say(f"zone {zone} reconnected for an orderly stop")

    def _stop_databases(self) -> None:
        """The service and the database members first, and until every postmaster has exited: a primary
        archives its last WAL on the way down (Patroni itself exits before that ends), to the S3 stand-in,
        which must still be up to take it."""
        pid_files = [self.layout.member_dir(m) / "data" / "postmaster.pid" for m in PATRONI_MEMBERS]
        try:
            for phase in (Phase.APP, Phase.DATABASE):  # the service before the database it uses
                self.supervisor.stop_programs([p.name for p in self.programs() if p.phase == phase])
            wait_for("PostgreSQL to archive its last WAL and stop", lambda: not any(map(_postmaster_up, pid_files)),
                     POSTMASTER_STOP_S)  # fmt: skip
        except Timeout as exc:
            self.say(f"{exc}: ended with the rest")

    def verify_down(self) -> None:
        """Nothing of ours runs: checked by pid and by port."""
        pids = set(stack_pids(self.layout))
        if self.layout.zoned:
            pids |= {pid for zone in self.layout.zones for pid in self.zones.pids(zone)}
        ours = set(bound_ports(self.layout, self.programs()))
        taken = {ap: pid for ap, pid in listeners().items() if (ap[0], ap[1]) in {(a, p) for _, a, p in ours}}
        if pids or taken:
            raise StackError(f"still running after down: pids {sorted(pids)}, listeners {taken}")

    def purge(self) -> None:
        for d in {self.layout.db_dir, self.layout.run_dir, self.layout.state_dir}:
            shutil.rmtree(d, ignore_errors=True)
        self.say(f"removed {self.layout.state_dir} and the database files in {self.layout.db_dir}")

    # --- scale -------------------------------------------------------------
    def scale(self, count: int) -> None:
        """Change the instance count; the load balancer never routes to a starting or stopping one."""
        if count < 1:
            raise StackError(f"instance count must be at least 1, got {count}")
        if not self.supervisor.running():
            raise StackError("the local stack is not running: `pynomaly-ops local up` first")
        env = self.wiring.service_env()
        current = self.layout.instances
        self._add_instances([api_program(self.layout, i, env) for i in range(current, count)])
        for index in reversed(range(count, current)):
            self._remove_instance(api_program(self.layout, index, env))
        self.layout.instances = count
        self.layout.save()
        programs = self.programs()
        render.write_haproxy_cfg(self.layout, programs)
        render.write_api_targets(self.layout, programs)
        self.say(f"{count} instance(s) in service")

    def _add_instances(self, programs: list[Program]) -> None:
        """Start them all at once, then put each in the load balancer once healthy."""
        if not programs:
            return
        check_ports(self._in_this_namespace([(p.name, p.address, p.port) for p in programs]))
        for program in programs:
            render.write_program(self.layout, program)
            self.supervisor.add(program.name)
        self._wait_healthy(programs, "new instances")
        for program in programs:
            self.haproxy.add_server(program)
        self._wait_in_rotation(programs)

    def _remove_instance(self, program: Program) -> None:
        lb = self.haproxy
        if program.name in lb.servers():
            lb.drain(program.name)
            self._wait(
                f"{program.name} drained", lambda: lb.active_sessions(program.name) == 0, DRAIN_TIMEOUT_S, "haproxy"
            )
            lb.delete_server(program.name)
        self.supervisor.remove(program.name)
        (self.layout.programs_dir / f"{program.name}.conf").unlink(missing_ok=True)
        self.say(f"{program.name} removed")


def _postmaster_up(pid_file: Path) -> bool:
    try:
        return Path(f"/proc/{int(pid_file.read_text().split()[0])}").exists()
    except (OSError, ValueError, IndexError):
        return False


# --- checks before start ----------------------------------------------------------
def check_binaries(programs: list[Program]) -> None:
    required = [(p.executable, p.package) for p in programs]
    required += [(str(PG_BIN / "postgres"), "postgresql-15 (apt-get install postgresql)")]
    required += [(str(BARMAN_BIN / "barman-cloud-wal-archive"), BARMAN_PACKAGE)]  # the members' archive_command
    missing = [(path, pkg) for path, pkg in required if not os.access(path, os.X_OK)]
    if missing:
        lines = "\n  ".join(f"{path}: install {pkg}" for path, pkg in dict(missing).items())
        raise StackError(f"missing server binaries:\n  {lines}\n(scripts/setup installs them all, as root)")


def bound_ports(layout: Layout, programs: list[Program]) -> list[tuple[str, str, int]]:
    """(name, address, port) of every socket the stack listens on."""
    p = layout.ports
    ports = [(prog.name, prog.address, prog.port) for prog in programs]
    endpoints = ("lb", "db_writer", "db_reader", "redis_writer", "redis_reader")
    ports += [(name, layout.regional, p[name]) for name in endpoints]
    ports += [(f"{name}-peer", layout.zone_address(zone), p["etcd_peer"]) for name, zone in ETCD_MEMBERS.items()]
    ports += [(f"postgres-{z}", layout.zone_address(z), p["postgres"]) for z in PATRONI_MEMBERS.values()]
    return ports


def check_ports(sockets: list[tuple[str, str, int]]) -> None:
    """``sockets``: (name, address, port) the stack is about to listen on."""
    taken = [(n, a, p) for n, a, p in sockets if not health.port_free(a, p)]
    if taken:
        lines = "\n  ".join(f"{a}:{p} ({n}) is taken by {holder(a, p)}" for n, a, p in taken)
        raise StackError(
            f"ports already in use:\n  {lines}\n"
            "Stop what holds them, or move the stack: "
            "PYNOMALY_LOCAL_PORT_OFFSET=<n> or PYNOMALY_LOCAL_PORT_<NAME>=<port> "
            "(recorded at the first `up`; `local down --purge` to choose again)"
        )


def open_stack(state_dir: Path, say: Say = print, create: bool = False, zoned: bool | None = None) -> Stack:
    """The stack recorded in ``state_dir`` (``create``: a new one if none is). ``zoned`` True/False: the stack
    must have (not have) its zones in network namespaces; a recorded stack never changes shape."""
    layout = Layout.load(state_dir)
    if layout is None:
        if not create:
            raise StackError(f"no local stack in {state_dir}: `pynomaly-ops local up` creates one")
        layout = Layout.create(state_dir, instances=load().scaling.instances_normal, zoned=bool(zoned))
        layout.save()
    elif zoned is not None and zoned != layout.zoned:
        has, wants = ("has", "without") if layout.zoned else ("has no", "with")
        raise StackError(
            f"the local stack in {state_dir} {has} zones in network namespaces, and its etcd and database members"
            f" keep their addresses: to run it {wants} them, `pynomaly-ops local down --purge` (its data goes),"
            f" then `local up{' --zones' if not layout.zoned else ''}`"
        )
    return Stack(layout, say)


def running_stack(state_dir: str | Path | None = None, say: Say | None = None) -> Stack:
    """The existing stack in ``state_dir`` (default: as the `local` commands resolve it), for code that observes
    or breaks a running stack (local.probes, local.faults); its messages go to the ``local`` logger."""
    directory = state_dir_from(None if state_dir is None else Path(state_dir))
    return open_stack(directory, say or logging.getLogger("local").info)
