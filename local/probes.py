"""Observe the local stack: who leads, what is ready, what runs where, and what clients saw.

Plain typed functions with JSON-friendly arguments and results, called by the tests and by Chaos Toolkit
experiments alike (``{"type": "python", "module": "local.probes", "func": "patroni_leader"}``). Each takes
``state_dir`` (default: as the `local` commands resolve it), raises when it cannot answer, and waits only
by polling against a deadline. The recorders live in local.recorders; their function forms are here, where
a relative URL or a missing DSN is resolved against the stack's outputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from local import aws, health
from local.layout import Layout
from local.programs import ETCD_MEMBERS, PATRONI_MEMBERS, REDIS_NODES, SENTINELS, patroni_program
from local.recorders import (
    DEFAULT_RATE_PER_S,
    DEFAULT_TABLE,
    DEFAULT_WRITE_RATE_PER_S,
    RequestRecorder,
    WriteRecorder,
    write_jsonl,
)
from local.stack import running_stack
from local.supervisor import log_tail
from local.waiting import NotYet, Timeout, wait_for
from pynomaly_ops.outputs import StackOutputs
from pynomaly_ops.waiting import changed as _changed
from pynomaly_ops.waiting import clock as _clock

# The figures a wait returns besides its seconds, by function (as local/faults.py's FIGURES).
FIGURES = {"wait_for_zone_rejoined": ("leader changes on heal",)}
DATABASE_LOGS = tuple(patroni_program(m) for m in PATRONI_MEMBERS)


class ProbeError(RuntimeError):
    """The stack cannot answer the question (nothing leads, nothing runs under that name...)."""


def _layout(state_dir: str | None) -> Layout:
    return running_stack(state_dir).layout


def stack_outputs(state_dir: str | None = None) -> dict[str, Any]:
    """The outputs `local up` wrote: the keys of `pulumi stack output --json`, plus the local ones."""
    path = _layout(state_dir).outputs_file
    if not path.exists():
        raise ProbeError(f"no outputs in {path}: `pynomaly-ops local up` writes them")
    return StackOutputs.from_json_file(path).model_dump()


# --- PostgreSQL and etcd ----------------------------------------------------------
def patroni_leader(state_dir: str | None = None) -> str:
    """The Patroni member (``pg-a``, ``pg-b``) that is the PostgreSQL primary."""
    leader = health.patroni_leader(_layout(state_dir))
    if leader is None:
        raise ProbeError("no running Patroni member holds the leader key")
    return leader


def database_ready(state_dir: str | None = None) -> bool:
    """A leader and a synchronous standby: the Multi-AZ shape."""
    return health.database_ready(_layout(state_dir))


def postmaster_pid(member: str, state_dir: str | None = None) -> int | None:
    """The pid of a member's postmaster (from its postmaster.pid), None when it is not running."""
    path = _layout(state_dir).member_dir(member) / "data" / "postmaster.pid"
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def etcd_leader(state_dir: str | None = None) -> str:
    """The etcd member (``etcd-a``...) that leads the Raft group: the worst one to lose."""
    return health.etcd_leader(_layout(state_dir))


def etcd_healthy(state_dir: str | None = None) -> bool:
    """Every etcd member answers /health with 200 (it sees a leader: a quorum)."""
    layout = _layout(state_dir)
    port = layout.ports["etcd"]
    return all(health.http_ok(f"http://{layout.zone_address(z)}:{port}/health") for z in ETCD_MEMBERS.values())


def database_logs(state_dir: str | None = None, lines: int = 40) -> str:
    """The last lines of every Patroni member's log, for failure messages."""
    layout = _layout(state_dir)
    return "\n".join(f"--- {name} ---\n{log_tail(layout, name, lines)}" for name in DATABASE_LOGS)


@contextmanager
def database_logs_on_timeout(state_dir: str | None = None) -> Iterator[None]:
    """A Timeout raised inside carries the Patroni logs: a database wait that failed says why."""
    try:
        yield
    except Timeout as exc:
        raise Timeout(f"{exc}\n{database_logs(state_dir)}") from None


# --- Redis --------------------------------------------------------------------------
def _sentinels(layout: Layout) -> list[tuple[str, int]]:
    return [(layout.zone_address(zone), layout.ports["sentinel"]) for zone in SENTINELS.values()]


def redis_primary(state_dir: str | None = None) -> str:
    """``address:port`` of the Redis primary, as the Sentinels report it."""
    layout = _layout(state_dir)
    primary = health.redis_primary(_sentinels(layout), layout.secrets["redis_password"])
    if primary is None:
        raise ProbeError("no Sentinel answers with the primary's address")
    return f"{primary[0]}:{primary[1]}"


def redis_primary_program(state_dir: str | None = None) -> str:
    """The supervisord program (``redis-a``, ``redis-b``) of the Redis primary."""
    layout = _layout(state_dir)
    primary = redis_primary(state_dir)
    for name, zone in REDIS_NODES.items():
        if primary == f"{layout.zone_address(zone)}:{layout.ports['redis']}":
            return name
    raise ProbeError(f"the Redis primary {primary} is none of {sorted(REDIS_NODES)}")


def redis_role(name: str, state_dir: str | None = None) -> str:
    """``master`` or ``slave``, as the Redis node of program ``name`` says itself."""
    if name not in REDIS_NODES:
        raise ProbeError(f"{name!r} is not a Redis node; one of {sorted(REDIS_NODES)}")
    layout = _layout(state_dir)
    client = health.redis_client(
        layout.zone_address(REDIS_NODES[name]), layout.ports["redis"], layout.secrets["redis_password"]
    )
    role = client.role()[0]
    return role.decode() if isinstance(role, bytes) else str(role)


def redis_endpoint_writable(state_dir: str | None = None) -> bool:
    """A write through the primary endpoint (the load balancer's port) succeeds: replicas refuse writes."""
    layout = _layout(state_dir)
    client = health.redis_client(layout.regional, layout.ports["redis_writer"], layout.secrets["redis_password"])
    return bool(client.set("probe", "1"))


# --- processes and the load balancer ------------------------------------------------
def process_pid(name: str, state_dir: str | None = None) -> int | None:
    """The pid of supervisord program ``name``, None while it is not running."""
    info = running_stack(state_dir).supervisor.info()
    if name not in info:
        raise ProbeError(f"no program {name!r} in supervisord; known: {', '.join(sorted(info))}")
    return int(info[name]["pid"]) or None


def supervisord_pid(state_dir: str | None = None) -> int | None:
    return running_stack(state_dir).supervisor.pid()


def instance_status(state_dir: str | None = None) -> dict[str, str]:
    """Each API instance in the load balancer and its state (``UP``, ``DOWN 1/2``, ``DRAIN``...)."""
    return running_stack(state_dir).haproxy.server_status()


def _in_state(current: str, status: str) -> bool:
    """HAProxy's first word is what the server is now (``UP 1/2``: up, one check failed; ``DOWN 1/2``: down,
    one check passed): it takes traffic exactly when that word is ``UP``."""
    return current.split(" ", 1)[0] == status


def instance_count(state_dir: str | None = None, status: str | None = None) -> int:
    """API instances in the load balancer; with ``status`` (``UP``, ``DOWN``, ``DRAIN``...), only those in it."""
    states = instance_status(state_dir).values()
    return sum(status is None or _in_state(s, status) for s in states)


# --- waiting for recovery -----------------------------------------------------------
def wait_for_database_ready(
    timeout_s: float = 60, since: float | None = None, state_dir: str | None = None
) -> dict[str, Any]:
    """Until there is a leader and a synchronous standby; ``seconds`` counts from ``since`` (the fault's time);
    the Patroni logs are in the error otherwise."""
    elapsed = _clock(since)
    with database_logs_on_timeout(state_dir):
        wait_for("a leader and a synchronous standby", lambda: database_ready(state_dir), timeout_s)
    return {"leader": patroni_leader(state_dir), "seconds": elapsed()}


def wait_for_new_database_primary(
    old: str, timeout_s: float = 30, since: float | None = None, state_dir: str | None = None
) -> dict[str, Any]:
    """Until a member other than ``old`` leads; ``seconds`` counts from ``since`` (the fault's time)."""
    elapsed = _clock(since)
    with database_logs_on_timeout(state_dir):
        leader = wait_for(f"a new primary (not {old})", _changed(lambda: patroni_leader(state_dir), old), timeout_s)
    return {"leader": leader, "old": old, "seconds": elapsed()}


def wait_for_zone_rejoined(
    zone: str,
    timeout_s: float = 120,
    since: float | None = None,
    leader: str | None = None,
    state_dir: str | None = None,
) -> dict[str, Any]:
    """Until ``zone`` is whole again after a cut or a power loss: each of its servers healthy, the database a
    leader and a synchronous standby, every API instance in the load balancer. ``figures`` count the changes
    of database leader seen meanwhile, from ``leader`` (the one at the heal)."""
    stack = running_stack(state_dir)
    elapsed, layout = _clock(since), stack.layout
    programs = [p for p in stack.programs() if p.zone == zone]
    leaders = [leader] if leader else []

    def whole() -> bool:
        roles = health.patroni_roles(layout)
        now = health.leader_in(roles)
        if now and (not leaders or leaders[-1] != now):
            leaders.append(now)
        if down := [p.name for p in programs if not health.probe(p, stack.haproxy.ok)]:
            raise NotYet(f"not healthy: {', '.join(down)}")
        if not health.multi_az(roles):
            raise NotYet(f"database not a leader and a synchronous standby: {roles}")
        if (up := instance_count(state_dir, "UP")) != layout.instances:
            raise NotYet(f"{up} of {layout.instances} instances in the load balancer")
        return True

    with database_logs_on_timeout(state_dir):
        wait_for(f"zone {zone} back: its servers, the database's Multi-AZ shape, every instance", whole, timeout_s, 1.0)
    changes = max(0, len(leaders) - 1)
    return {"zone": zone, "leader": leaders[-1] if leaders else None, "seconds": elapsed(),
            "figures": dict(zip(FIGURES["wait_for_zone_rejoined"], (changes,), strict=True))}  # fmt: skip


def wait_for_new_redis_primary(
    old: str, timeout_s: float = 30, since: float | None = None, state_dir: str | None = None
) -> dict[str, Any]:
    """Until the Sentinels name a primary other than ``old`` (``address:port``)."""
    elapsed = _clock(since)
    primary = wait_for(f"a new Redis primary (not {old})", _changed(lambda: redis_primary(state_dir), old), timeout_s)
    return {"primary": primary, "old": old, "seconds": elapsed()}


def wait_for_process_replaced(
    name: str, old_pid: int, timeout_s: float = 30, since: float | None = None, state_dir: str | None = None
) -> dict[str, Any]:
    """Until supervisord runs ``name`` under a pid other than ``old_pid``."""
    elapsed = _clock(since)
    replaced = _changed(lambda: process_pid(name, state_dir), old_pid)
    pid = wait_for(f"{name} replaced (pid not {old_pid})", replaced, timeout_s)
    return {"name": name, "pid": pid, "old_pid": old_pid, "seconds": elapsed()}


def wait_for_instance_status(
    name: str,
    status: str,
    timeout_s: float = 30,
    since: float | None = None,
    interval_s: float = 0.05,
    state_dir: str | None = None,
) -> dict[str, Any]:
    """Until the load balancer shows instance ``name`` in state ``status`` (``DOWN``, ``UP``...)."""
    elapsed = _clock(since)
    stack = running_stack(state_dir)

    def reached() -> str | None:
        current = stack.haproxy.server_status().get(name, "")
        return current if _in_state(current, status) else None

    current = wait_for(f"{name} {status} in the load balancer", reached, timeout_s, interval_s=interval_s)
    return {"name": name, "status": current, "seconds": elapsed()}


def wait_for_instance_out_or_replaced(
    name: str, old_pid: int, timeout_s: float = 30, since: float | None = None, state_dir: str | None = None
) -> dict[str, Any]:
    """Until the load balancer stops sending to the lost instance ``name``: it is marked DOWN, or its
    replacement (a pid other than ``old_pid``) already passes the checks, which happens when supervisord
    restarts it before two checks have failed. ``out`` says which."""
    elapsed = _clock(since)
    stack = running_stack(state_dir)

    def settled() -> dict[str, Any] | None:
        current = stack.haproxy.server_status().get(name, "")
        if _in_state(current, "DOWN"):
            return {"out": True}
        pid = process_pid(name, state_dir)
        if pid not in (None, old_pid) and current == "UP":
            return {"out": False, "pid": pid}
        return None

    result = wait_for(f"{name} out of the load balancer or replaced", settled, timeout_s, interval_s=0.05)
    return {"name": name, **(result or {}), "seconds": elapsed()}  # wait_for returns only a truthy result


# --- the job queue ------------------------------------------------------------------
def queue_depths(state_dir: str | None = None) -> dict[str, dict[str, int]]:
    """The job queue's and the dead-letter queue's messages: ``{role: {"visible", "in_flight"}}``."""
    depths = aws.queue_depths(running_stack(state_dir).wiring)
    return {role: {"visible": d.visible, "in_flight": d.in_flight} for role, d in depths.items()}


def wait_for_queue_depth(
    role: str,
    at_least: int,
    timeout_s: float = 30,
    since: float | None = None,
    state_dir: str | None = None,
) -> dict[str, Any]:
    """Until queue ``role`` (``jobs``, ``dead_letters``) holds ``at_least`` visible messages."""
    elapsed = _clock(since)

    def reached() -> int | None:
        visible = queue_depths(state_dir)[role]["visible"]
        return visible if visible >= at_least else None

    visible = wait_for(f"{at_least} messages visible in the {role} queue", reached, timeout_s, interval_s=0.2)
    return {"role": role, "visible": visible, "seconds": elapsed()}


# --- the load balancer's maintenance mode -------------------------------------------
MAINTENANCE_MARK = "down for maintenance"  # in local/render.py's page


def maintenance_page_served(state_dir: str | None = None) -> bool:
    """The load balancer answers with the maintenance page (503 and the page) instead of the service."""
    response = httpx.get(stack_outputs(state_dir)["load_balancer_url"] + "/health", timeout=health.PROBE_TIMEOUT_S)
    return response.status_code == 503 and MAINTENANCE_MARK in response.text


def wait_for_maintenance_page(
    served: bool = True, timeout_s: float = 30, since: float | None = None, state_dir: str | None = None
) -> dict[str, Any]:
    """Until the page is served (``served``) or the service answers /health again (not ``served``)."""
    elapsed = _clock(since)
    url = stack_outputs(state_dir)["load_balancer_url"] + "/health"

    def reached() -> bool:
        if served:
            return maintenance_page_served(state_dir)
        return httpx.get(url, timeout=health.PROBE_TIMEOUT_S).status_code == 200

    wait_for("the maintenance page" if served else "normal service through the load balancer", reached, timeout_s)
    return {"served": served, "seconds": elapsed()}


# --- recorders, function form -------------------------------------------------------
def record_requests(
    url: str,
    duration_s: float,
    path: str,
    rate_per_s: float = DEFAULT_RATE_PER_S,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    json_body: Any = None,
    timeout_s: float = 5.0,
    authorize: bool = False,
    state_dir: str | None = None,
) -> dict[str, Any]:
    """Open-model load for ``duration_s``; every request as a JSON line in ``path``; returns the summary.

    A ``url`` starting with ``/`` is a path on the stack's load balancer; ``authorize`` adds its API key.
    """
    headers = dict(headers or {})
    if url.startswith("/") or authorize:
        outputs = stack_outputs(state_dir)
        url = outputs["load_balancer_url"] + url if url.startswith("/") else url
        if authorize:
            headers["Authorization"] = f"Bearer {outputs['api_key']}"
    recorder = RequestRecorder(url, rate_per_s, method, headers, json_body, timeout_s, max_duration_s=duration_s)
    with recorder:
        recorder.run_for(duration_s)
    records = recorder.records
    write_jsonl(path, (r.as_dict() for r in records))
    return recorder.summary() | {"path": path, "duration_s": duration_s}


def record_writes(
    duration_s: float,
    path: str,
    dsn: str | None = None,
    table: str = DEFAULT_TABLE,
    rate_per_s: float = DEFAULT_WRITE_RATE_PER_S,
    drop_table: bool = True,
    state_dir: str | None = None,
) -> dict[str, Any]:
    """Numbered writes for ``duration_s`` through ``dsn`` (default: the stack's writer DSN), then read back:
    every attempt as a JSON line in ``path``; the summary has the lost acknowledged writes and the outage."""
    dsn = dsn or stack_outputs(state_dir)["db_writer_dsn"]
    recorder = WriteRecorder(dsn, table, rate_per_s, max_duration_s=duration_s)
    with recorder:
        recorder.run_for(duration_s)
    lost = recorder.lost_writes()
    write_jsonl(path, (a.as_dict() for a in recorder.attempts))
    if drop_table:
        recorder.drop_table()
    return recorder.summary(lost) | {"path": path, "duration_s": duration_s}
