"""The local stack's control planes ask for credentials, as production's do (security review, issue 22): each
attacked on the real running stack, over loopback, by a client that has no password or the wrong one.

Redis and Sentinel refuse a client without AUTH; etcd refuses an unauthenticated write to Patroni's keys (and
Patroni's own user may write nothing else); Patroni's REST API refuses an unsafe request without its
credentials while its health checks stay open; Prometheus serves no lifecycle API; every file holding a
secret is 0600 from its creation; `local outputs --json` masks the secrets unless asked.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import socket
import stat
import subprocess
from pathlib import Path

import httpx
import pytest
from conftest import RunningStack, cli

from local import etcd, health, probes
from local.layout import SERVER_ACCOUNTS
from local.programs import (
    ETCD_MEMBERS,
    PATRONI_LEADER_KEY,
    PATRONI_MEMBERS,
    REDIS_NODES,
    SENTINEL_MASTER,
    SENTINELS,
    Phase,
    redis_exporter_passwords,
)
from local.secretfile import write_secret
from local.wiring import MASK

pytestmark = pytest.mark.integration

TIMEOUT_S = 3


def resp(address: str, port: int, *commands: str) -> list[str]:
    """Each command's first reply line, from a raw RESP client on one connection (no client library that
    might authenticate or negotiate on its own)."""
    answers = []
    with socket.create_connection((address, port), timeout=TIMEOUT_S) as s, s.makefile("rb") as replies:
        for command in commands:
            s.sendall(command.encode() + b"\r\n")
            answers.append(replies.readline().decode().strip())
    return answers


def _host_port(endpoint: str) -> tuple[str, int]:
    host, port = endpoint.rsplit(":", 1)
    return host, int(port)


def redis_addresses(running: RunningStack) -> list[tuple[str, int]]:
    layout = running.layout
    nodes = [(layout.zone_address(z), layout.ports["redis"]) for z in REDIS_NODES.values()]
    endpoints = [_host_port(e) for e in (running.outputs.redis_primary_endpoint, running.outputs.redis_reader_endpoint)]
    return nodes + endpoints


# --- Redis and Sentinel -------------------------------------------------------------------------------------
def test_redis_refuses_a_client_without_the_password(running: RunningStack):
    password = running.layout.secrets["redis_password"]
    for address, port in redis_addresses(running):  # every node, and the load balancer's two endpoints
        assert resp(address, port, "PING")[0].startswith("-NOAUTH"), (address, port)
        assert resp(address, port, "SET stolen 1")[0].startswith("-NOAUTH"), (address, port)
        assert resp(address, port, "AUTH not-the-password", "PING") == [
            "-WRONGPASS invalid username-password pair or user is disabled.",
            "-NOAUTH Authentication required.",
        ]
        assert resp(address, port, f"AUTH {password}", "PING") == ["+OK", "+PONG"]


def test_redis_keeps_protected_mode_and_replicates_with_masterauth(running: RunningStack):
    layout, password = running.layout, running.layout.secrets["redis_password"]
    for zone in REDIS_NODES.values():
        client = health.redis_client(layout.zone_address(zone), layout.ports["redis"], password)
        assert client.config_get("protected-mode") == {"protected-mode": "yes"}
        assert client.config_get("masterauth") == {"masterauth": password}
    replica = next(n for n in REDIS_NODES if probes.redis_role(n, running.state) == "slave")
    info = health.redis_client(layout.zone_address(REDIS_NODES[replica]), layout.ports["redis"], password).info(
        "replication"
    )
    assert info["master_link_status"] == "up"  # the replica authenticated to its primary


def test_sentinel_refuses_a_client_without_the_password(running: RunningStack):
    layout, password = running.layout, running.layout.secrets["redis_password"]
    for zone in SENTINELS.values():
        address, port = layout.zone_address(zone), layout.ports["sentinel"]
        ask = f"SENTINEL get-master-addr-by-name {SENTINEL_MASTER}"
        assert resp(address, port, ask)[0].startswith("-NOAUTH"), address
        # what an attacker would do with it: point the Sentinels at a Redis of its own
        assert resp(address, port, f"SENTINEL SET {SENTINEL_MASTER} quorum 1")[0].startswith("-NOAUTH"), address
        assert resp(address, port, f"AUTH {password}", ask) == ["+OK", "*2"]
    # The service asks the Sentinels, with the password from its file: its cache answers.
    fleet = [p for p in running.stack.programs() if p.name.startswith("api-")]
    assert all(
        httpx.get(f"http://{p.address}:{p.port}/ready", timeout=10).json()["checks"]["cache"] == "ok" for p in fleet
    )


# --- etcd -----------------------------------------------------------------------------------------------------
def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_etcd_refuses_an_unauthenticated_write_to_patronis_keys(running: RunningStack):
    layout = running.layout
    leader = health.dcs_leader(layout)
    assert leader in PATRONI_MEMBERS
    for url in etcd.member_urls(layout):
        put = httpx.post(
            f"{url}/v3/kv/put", json={"key": _b64(PATRONI_LEADER_KEY), "value": _b64("attacker")}, timeout=5
        )
        assert put.status_code != 200 and "user name is empty" in put.text, put.text
        read = httpx.post(f"{url}/v3/kv/range", json={"key": _b64(PATRONI_LEADER_KEY)}, timeout=5)
        assert "user name is empty" in read.text, read.text
        wrong = httpx.post(f"{url}/v3/auth/authenticate", json={"name": "root", "password": "guess"}, timeout=5)
        assert "authentication failed" in wrong.text, wrong.text
    assert health.dcs_leader(layout) == leader  # unchanged, read with the root user's token


def test_patronis_etcd_user_may_write_only_patronis_keys(running: RunningStack):
    layout = running.layout
    url = etcd.member_urls(layout)[0]
    token = etcd.authenticate(url, etcd.PATRONI_USER, layout.secrets["etcd_patroni_password"])
    elsewhere = httpx.post(
        f"{url}/v3/kv/put", json={"key": _b64("/elsewhere"), "value": _b64("x")}, headers={"Authorization": token},
        timeout=5,
    )  # fmt: skip
    assert "permission denied" in elsewhere.text, elsewhere.text
    grant = httpx.post(
        f"{url}/v3/auth/user/grant", json={"user": etcd.PATRONI_USER, "role": "root"}, headers={"Authorization": token},
        timeout=5,
    )  # fmt: skip
    assert "permission denied" in grant.text, grant.text


# --- Patroni's REST API ---------------------------------------------------------------------------------------
def test_patroni_refuses_an_unauthenticated_switchover(running: RunningStack):
    layout = running.layout
    leader = probes.patroni_leader(running.state)
    candidate = next(m for m in PATRONI_MEMBERS if m != leader)
    body = {"leader": leader, "candidate": candidate}
    for member, zone in PATRONI_MEMBERS.items():
        base = f"http://{layout.zone_address(zone)}:{layout.ports['patroni']}"
        assert httpx.post(f"{base}/switchover", json=body, timeout=5).status_code == 401, member
        assert httpx.post(f"{base}/switchover", json=body, auth=("patroni", "guess"), timeout=5).status_code == 401
        assert httpx.post(f"{base}/restart", json={}, timeout=5).status_code == 401
        assert httpx.post(f"{base}/reinitialize", json={}, timeout=5).status_code == 401
        assert httpx.patch(f"{base}/config", json={"ttl": 1000}, timeout=5).status_code == 401
        assert httpx.get(f"{base}/health", timeout=5).status_code == 200  # the checks stay open
        assert (
            httpx.request("OPTIONS", f"{base}/{'primary' if member == leader else 'replica'}", timeout=5).status_code
            == 200
        )
    assert probes.patroni_leader(running.state) == leader
    # With the credentials the request is heard (and refused for its candidate, so nothing moves).
    heard = health.patroni_request(layout, leader, "POST", "/switchover", {"leader": leader, "candidate": "nobody"})
    assert heard.status_code == 412, heard.text
    assert probes.patroni_leader(running.state) == leader


# --- Prometheus -------------------------------------------------------------------------------------------------
def test_prometheus_serves_no_lifecycle_api(running: RunningStack):
    url = running.outputs.prometheus_url
    for path in ("/-/quit", "/-/reload"):
        reply = httpx.post(f"{url}{path}", timeout=5)
        assert reply.status_code == 403 and "Lifecycle API is not enabled" in reply.text, (path, reply.text)
    flags = httpx.get(f"{url}/api/v1/status/flags", timeout=5).json()["data"]
    assert flags["web.enable-lifecycle"] == "false"
    assert httpx.get(f"{url}/-/ready", timeout=5).status_code == 200  # still running


# --- secrets at rest and on the terminal --------------------------------------------------------------------------
def secret_files(running: RunningStack) -> list[Path]:
    layout = running.layout
    files = [layout.state_dir / "stack.json", layout.outputs_file, layout.haproxy_cfg]
    files += [*sorted(layout.secrets_dir.iterdir()), redis_exporter_passwords(layout)]
    files += [layout.redis_conf(n) for n in (*REDIS_NODES, *SENTINELS)]  # Sentinel rewrites its own
    files += sorted(layout.programs_dir.glob("*.conf"))
    files += [layout.member_dir(m) / "patroni.yml" for m in PATRONI_MEMBERS]
    return files


def test_secret_files_are_0600(running: RunningStack):
    files = secret_files(running)
    assert len(files) > 10 and all(f.exists() for f in files)
    modes = {str(f): oct(stat.S_IMODE(f.stat().st_mode)) for f in files}
    assert {f: m for f, m in modes.items() if m != "0o600"} == {}
    assert stat.S_IMODE(running.layout.secrets_dir.stat().st_mode) == 0o700
    # and they hold the secrets the servers use: nothing else in the state directory does (but logs and data)
    password = running.layout.secrets["redis_password"]
    assert running.layout.redis_password_file.read_text().strip() == password
    layout = running.layout
    configs = [layout.conf_dir, *(layout.server_dir(s) for s in ("haproxy", "redis")), layout.prometheus_dir]
    tsdb = layout.prometheus_dir / "data"
    files = [p for d in configs for p in d.rglob("*") if p.is_file() and tsdb not in p.parents]
    readable = [p for p in files if stat.S_IMODE(p.stat().st_mode) & 0o044]
    assert [str(p) for p in readable if password in p.read_text(errors="replace")] == []


# --- least privilege ------------------------------------------------------------------------------------------
def _uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


@pytest.mark.skipif(os.geteuid() != 0, reason="a stack run by a user runs everything as that user")
def test_only_supervisord_and_the_python_programs_run_as_root(running: RunningStack):
    """The servers from Debian's packages run as their packages' accounts, the database as postgres."""
    stack = running.stack
    pids = {row["name"]: row["pid"] for row in stack.status()}
    users = {name: pwd.getpwuid(_uid(pid)).pw_name for name, pid in pids.items() if pid}
    assert len(users) == len(stack.programs())  # every program running
    as_root = sorted(name for name, user in users.items() if user == "root")
    assert as_root == sorted(p.name for p in stack.programs() if p.name == "moto" or p.phase == Phase.APP)
    expected = dict.fromkeys(ETCD_MEMBERS, "etcd") | dict.fromkeys([*REDIS_NODES, *SENTINELS], "redis")
    expected |= {"haproxy": "haproxy", "prometheus": "prometheus", "node-exporter": "prometheus"}
    assert {name: users[name] for name in expected} == {name: SERVER_ACCOUNTS[s] for name, s in expected.items()}
    assert {users[f"patroni-{z}"] for z in PATRONI_MEMBERS.values()} == {running.layout.db_user}
    # each reads its own secrets, and no other server's
    secrets = {running.layout.haproxy_cfg: "haproxy", redis_exporter_passwords(running.layout): "prometheus"}
    for path, owner in secrets.items():
        readers = [user for user in set(SERVER_ACCOUNTS.values()) if _reads(user, path)]
        assert readers == [SERVER_ACCOUNTS[owner]], path


def _reads(user: str, path: Path) -> bool:
    return subprocess.run(["test", "-r", str(path)], user=user, check=False).returncode == 0


def test_a_secret_file_is_never_wider_than_0600(tmp_path, monkeypatch):
    """Created 0600 (whatever the umask) and complete before it takes its name: no reader sees it otherwise."""
    seen: list[tuple[int, bytes]] = []
    replace = os.replace

    def inspecting(src, dst):
        seen.append((stat.S_IMODE(os.stat(src).st_mode), Path(src).read_bytes()))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", inspecting)
    old = os.umask(0)
    try:
        path = write_secret(tmp_path / "s", "secret\n")
        path.chmod(0o644)  # an existing, wider file: replaced by a new 0600 one
        write_secret(path, "rotated\n")
    finally:
        os.umask(old)
    assert seen == [(0o600, b"secret\n"), (0o600, b"rotated\n")]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "rotated\n"
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no temporary file left


def test_outputs_json_masks_secrets_unless_asked(running: RunningStack):
    secrets = running.layout.secrets
    masked = cli(running.env, "outputs", "--json").stdout
    assert [name for name, value in secrets.items() if value in masked] == []
    data = json.loads(masked)
    assert data["api_key"] == MASK and f"password={MASK}" in data["db_writer_dsn"]
    shown = json.loads(cli(running.env, "outputs", "--json", "--show-secrets").stdout)
    assert shown["api_key"] == secrets["api_key"] and f"password={secrets['app_db_password']}" in shown["db_writer_dsn"]
    assert {k: v for k, v in shown.items() if k not in ("api_key", "db_writer_dsn")} == {
        k: v for k, v in data.items() if k not in ("api_key", "db_writer_dsn")
    }
    # In-process readers (drills, load tests) read the outputs file, which keeps them (0600).
    assert json.loads(running.layout.outputs_file.read_text())["api_key"] == secrets["api_key"]
