"""Is a server healthy? One probe per kind of server, plus the cluster-level
questions (who is the PostgreSQL leader, which Redis node is the primary)."""

from __future__ import annotations

import base64
import socket

import httpx
import redis

from local import etcd
from local.layout import Layout
from local.programs import (
    ETCD_MEMBERS,
    PATRONI_API_USER,
    PATRONI_LEADER_KEY,
    PATRONI_MEMBERS,
    SENTINEL_MASTER,
    Check,
    Program,
)

PROBE_TIMEOUT_S = 1.0


def port_open(address: str, port: int, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def port_free(address: str, port: int) -> bool:
    """Whether we could bind ``address:port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=PROBE_TIMEOUT_S).status_code == 200
    except httpx.HTTPError:
        return False


def redis_client(address: str, port: int, password: str | None) -> redis.Redis:
    """A client of a Redis node or a Sentinel of the stack: both require AUTH (the layout's ``redis_password``)."""
    return redis.Redis(
        host=address,
        port=port,
        password=password,
        socket_timeout=PROBE_TIMEOUT_S,
        socket_connect_timeout=PROBE_TIMEOUT_S,
    )


def redis_ok(address: str, port: int, password: str | None = None) -> bool:
    try:
        return bool(redis_client(address, port, password).ping())
    except redis.RedisError:
        return False


def sentinel_ok(address: str, port: int, password: str | None = None) -> bool:
    """Ping answered and the master known, with the other two Sentinels seen."""
    try:
        master = redis_client(address, port, password).sentinel_master(SENTINEL_MASTER)
    except redis.RedisError:
        return False
    if not isinstance(master, dict):  # redis-py's type also allows a bool
        return False
    return master.get("num-other-sentinels", 0) >= 2 and not master.get("is_odown")


def probe(program: Program, haproxy_ok=None) -> bool:
    if program.check == Check.HTTP:
        return http_ok(program.check_url)
    if program.check == Check.REDIS:
        return redis_ok(program.address, program.port, program.check_password)
    if program.check == Check.SENTINEL:
        return sentinel_ok(program.address, program.port, program.check_password)
    if program.check == Check.HAPROXY and haproxy_ok is not None:
        return haproxy_ok()
    return port_open(program.address, program.port)


# --- cluster questions ------------------------------------------------------------
def dcs_leader(layout: Layout) -> str | None:
    """The member that holds Patroni's leader key in etcd (None: no leader), by a linearizable read.

    Only an etcd member in the quorum can answer that read, so a member cut off with its zone never
    names the leader from its stale copy.
    """
    key = base64.b64encode(PATRONI_LEADER_KEY.encode()).decode()
    last: Exception | None = None
    for url in etcd.member_urls(layout):
        try:
            kvs = etcd.call(url, "kv/range", {"key": key}, layout, timeout_s=PROBE_TIMEOUT_S).get("kvs", [])
            return base64.b64decode(kvs[0]["value"]).decode() if kvs else None
        except (httpx.HTTPError, etcd.EtcdError, ValueError, KeyError) as exc:
            last = exc
    raise ConnectionError(f"no etcd member in the quorum answers: {last}")


def patroni_request(
    layout: Layout, member: str, method: str, path: str, body: object = None, timeout_s: float = 10
) -> httpx.Response:
    """A request to member ``member``'s Patroni REST API, with the credentials its unsafe requests need."""
    url = f"http://{layout.zone_address(PATRONI_MEMBERS[member])}:{layout.ports['patroni']}{path}"
    auth = (PATRONI_API_USER, layout.secrets["patroni_api_password"])
    return httpx.request(method, url, json=body, auth=auth, timeout=timeout_s)


def patroni_cluster(layout: Layout) -> dict:
    """Patroni's view of the cluster, asked of the leader-key holder first.

    A member cut off from etcd serves its last view, in which it can still be the leader; the holder's
    view is current. Without an answer from etcd, whichever member answers.
    """
    try:
        holder = dcs_leader(layout)
    except ConnectionError:
        holder = None
    last: Exception | None = None
    for _, zone in sorted(PATRONI_MEMBERS.items(), key=lambda member: member[0] != holder):
        try:
            url = f"http://{layout.zone_address(zone)}:{layout.ports['patroni']}/cluster"
            return httpx.get(url, timeout=PROBE_TIMEOUT_S).json()
        except (httpx.HTTPError, ValueError) as exc:
            last = exc
    raise ConnectionError(f"no Patroni member answers: {last}")


def patroni_roles(layout: Layout) -> dict[str, str]:
    """member name -> role ("leader", "sync_standby", "replica"), running members only."""
    members = patroni_cluster(layout).get("members", [])
    return {m["name"]: m["role"] for m in members if m.get("state") in ("running", "streaming")}


def leader_in(roles: dict[str, str]) -> str | None:
    """The leader among ``roles`` (from :func:`patroni_roles`), if any."""
    return next((m for m, r in roles.items() if r == "leader"), None)


def patroni_leader(layout: Layout) -> str | None:
    """The running member that holds the leader key, if any."""
    return leader_in(patroni_roles(layout))


def etcd_leader(layout: Layout) -> str:
    """The etcd member that leads the Raft group, as the members that answer see it.

    Raises ConnectionError when none answers, when the leader itself does not (its id has no name
    then) or when the answering members disagree (an election is under way).
    """
    names: dict[str, str] = {}
    leaders: set[str] = set()
    for name, url in zip(ETCD_MEMBERS, etcd.member_urls(layout), strict=True):
        try:
            status = etcd.call(url, "maintenance/status", {}, layout, timeout_s=2)
        except (httpx.HTTPError, etcd.EtcdError, ValueError):
            continue  # a frozen or dead member: ask the others
        names[status["header"]["member_id"]] = name
        leaders.add(status["leader"])
    if len(leaders) != 1 or (leader := leaders.pop()) not in names:
        raise ConnectionError(f"no etcd leader agreed on by the members that answer ({sorted(names.values())})")
    return names[leader]


def multi_az(roles: dict[str, str]) -> bool:
    """A leader and a synchronous standby among ``roles`` (from :func:`patroni_roles`): the Multi-AZ shape."""
    return {"leader", "sync_standby"} <= set(roles.values())


def database_ready(layout: Layout) -> bool:
    return multi_az(patroni_roles(layout))


def redis_primary(sentinels: list[tuple[str, int]], password: str | None) -> tuple[str, int] | None:
    for address, port in sentinels:
        try:
            addr = redis_client(address, port, password).sentinel_get_master_addr_by_name(SENTINEL_MASTER)
            if not isinstance(addr, tuple):  # None: this Sentinel does not know the master
                continue
            host, p = addr
            return (host.decode() if isinstance(host, bytes) else host), int(p)
        except (redis.RedisError, TypeError):
            continue
    return None
