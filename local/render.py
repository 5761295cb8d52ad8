"""Writes every generated configuration file from local/templates/ (one
template per file kind) into the state directory."""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from local import etcd, zones
from local.layout import MARKER_ENV, STACK, Layout
from local.programs import (
    ETCD_MEMBERS,
    FLEET_GROUP,
    PATRONI_API_USER,
    PATRONI_LOOP_WAIT_S,
    PATRONI_MEMBERS,
    PATRONI_NAMESPACE,
    PATRONI_RETRY_TIMEOUT_S,
    PATRONI_SCOPE,
    PATRONI_TTL_S,
    PG_BIN,
    REDIS_NODES,
    SENTINEL_MASTER,
    SENTINELS,
    WAL_SENDER_TIMEOUT_S,
    Program,
    etcd_client_urls,
    redis_exporter_passwords,
)
from local.rules import rules
from local.secretfile import write_secret
from local.wiring import Wiring
from pynomaly_ops.baselines import default_path, load
from pynomaly_ops.environment import DEFAULT_MAX_BODY_BYTES, INTERNAL_PATHS, INTERNAL_PREFIXES

TEMPLATES = Path(__file__).parent / "templates"
RULES_GROUP = "pynomaly-runbook-thresholds"

_env = Environment(
    loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, keep_trailing_newline=True, trim_blocks=True
)


def render(template: str, **values: object) -> str:
    return _env.get_template(template).render(**values)


def write(path: Path, text: str, mode: int = 0o644, owner: str | None = None) -> None:
    """``text`` to ``path`` in ``mode``: a file that holds secrets (no bit for others) is created with its mode
    from the start (local/secretfile.py), never written first and restricted after."""
    if not mode & 0o077:
        write_secret(path, text, owner, mode)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    if owner:
        shutil.chown(path, owner, owner)


def write_if_changed(path: Path, text: str, mode: int = 0o644, owner: str | None = None) -> bool:
    """Write ``text`` unless the file already holds it; whether it changed."""
    if path.exists() and path.read_text() == text:
        return False
    write(path, text, mode, owner)
    return True


# HAProxy's configuration holds Redis' AUTH password (its redis health checks): only its owner reads it.
HAPROXY_CFG_MODE = 0o600


def write_haproxy_cfg(layout: Layout, app: list[Program]) -> bool:
    """haproxy.cfg from the template; whether it changed."""
    text = haproxy_cfg(layout, app)
    return write_if_changed(layout.haproxy_cfg, text, HAPROXY_CFG_MODE, layout.account("haproxy"))


def write_secrets(layout: Layout) -> None:
    """The secrets programs read from files: the service's Redis password, redis_exporter's passwords."""
    layout.write_secret_files()
    password = layout.secrets["redis_password"]
    by_node = {f"redis://{layout.zone_address(z)}:{layout.ports['redis']}": password for z in REDIS_NODES.values()}
    write_secret(redis_exporter_passwords(layout), json.dumps(by_node, indent=2) + "\n", layout.account("prometheus"))


def refresh_live_configs(layout: Layout, programs: list[Program]) -> list[str]:
    """Re-render the configs of running servers that reload in place (HAProxy,
    Prometheus); returns the programs whose config changed."""
    changed = []
    if not layout.haproxy_flags.exists():  # a stack started before maintenance mode existed
        write_haproxy_files(layout)
    if write_haproxy_cfg(layout, programs):
        changed.append("haproxy")
    before = {f: (layout.prometheus_dir / f).read_text() for f in ("prometheus.yml", "rules.yml")}
    write_prometheus(layout, programs)
    if any((layout.prometheus_dir / f).read_text() != text for f, text in before.items()):
        changed.append("prometheus")
    return changed


def _node(layout: Layout, name: str, zone: str, directory: Path, **extra: object) -> dict[str, object]:
    return {"name": name, "address": layout.zone_address(zone), "dir": directory, **extra}


def own_dir(path: Path, owner: str | None, mode: int = 0o700) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    if owner:
        shutil.chown(path, owner, owner)
    return path


def own_tree(path: Path, owner: str | None) -> Path:
    """``path`` and everything in it ``owner``'s (a stack made before its server ran as its own account)."""
    own_dir(path, owner)
    if owner:
        for inner in path.rglob("*"):
            shutil.chown(inner, owner, owner)
    return path


def prepare_dirs(layout: Layout) -> None:
    for d in (layout.conf_dir, layout.log_dir, layout.programs_dir, layout.run_dir):
        d.mkdir(parents=True, exist_ok=True)
    layout.run_dir.chmod(0o755)
    # The servers' accounts must reach their files: the shared root is searchable by all.
    layout.db_dir.mkdir(parents=True, exist_ok=True)
    layout.db_dir.chmod(0o755)
    if layout.db_dir.parent != layout.state_dir:
        layout.db_dir.parent.chmod(0o755)
    for member in PATRONI_MEMBERS:
        own_dir(layout.member_dir(member), layout.db_user)
        own_dir(layout.member_dir(member) / "run", layout.db_user)
    for member in ETCD_MEMBERS:
        own_tree(layout.db_dir / member, layout.account("etcd"))
    own_dir(layout.server_dir("redis"), layout.account("redis"))
    for node in (*REDIS_NODES, *SENTINELS):
        own_tree(layout.redis_conf(node).parent, layout.account("redis"))
    own_dir(layout.haproxy_cfg.parent, layout.account("haproxy"))
    own_dir(layout.haproxy_socket.parent, layout.account("haproxy"))
    own_tree(layout.prometheus_dir, layout.account("prometheus"))


MAINTENANCE_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>Pynomaly: maintenance</title></head>"
    "<body><h1>Pynomaly is down for maintenance</h1><p>Please retry in a few minutes.</p></body></html>\n"
)


def write_haproxy_files(layout: Layout) -> None:
    """The maintenance page and the switches map, off: a (re)started HAProxy serves normally."""
    write(layout.maintenance_page, MAINTENANCE_PAGE)
    write(layout.haproxy_flags, "maintenance off\n")


def abuse_limits() -> dict[str, object]:
    """The load balancer's limits (baselines.yaml ``abuse``), as HAProxy counts them: per window."""
    b = load()
    return {
        "window_s": int(b.abuse.rate_window_s),
        "requests_per_window": math.ceil(b.request_limit_per_s("local") * b.abuse.rate_window_s),
        "auth_failures_per_window": b.abuse.auth_failures_per_window,
        "retry_after_s": b.abuse.retry_after_s,
        "max_body_bytes": DEFAULT_MAX_BODY_BYTES,
        "internal_paths": " ".join(INTERNAL_PATHS),
        "internal_prefixes": " ".join(INTERNAL_PREFIXES),
    }


def haproxy_cfg(layout: Layout, app: list[Program]) -> str:
    return render(
        "haproxy.cfg.j2",
        layout=layout,
        ports=layout.ports,
        regional=layout.regional,
        fleet_backend=FLEET_GROUP,
        app_servers=[p for p in app if p.group == FLEET_GROUP],
        pg_members=[{"name": m, "address": layout.zone_address(z)} for m, z in PATRONI_MEMBERS.items()],
        redis_nodes=[{"name": n, "address": layout.zone_address(z)} for n, z in REDIS_NODES.items()],
        redis_password=layout.secrets["redis_password"],
        limits=abuse_limits(),
    )


def wal_archiving(layout: Layout) -> dict[str, object]:
    """The members' archive_command (PostgreSQL fills in %p, the segment's path) and archive_timeout: half
    the RPO objective, the other half left for the upload and a retry."""
    timeout_s = int(load().recovery.point_in_time.rpo_s.local // 2)
    return {"command": Wiring(layout).wal_archive_command, "timeout_s": timeout_s}


RESTORE_SCRIPT = "restore-base-backup"
RESTORE_SCRIPT_TEXT = """#!/bin/sh
# Generated by pynomaly-ops local: Patroni's custom bootstrap of a rebuild (local/disaster.py) - do not edit.
# Patroni appends --scope=... --datadir=...; the base backup goes into that data directory.
set -eu
for arg; do case $arg in --datadir=*) datadir=${arg#--datadir=} ;; esac; done
%s "$datadir"
mkdir -p "$datadir/pg_wal"  # left out of the base backup: the replay fills it
chmod 700 "$datadir"  # PostgreSQL refuses a data directory others can read
"""


def bootstrap_from_backup(layout: Layout, member_dir: Path) -> dict[str, str] | None:
    """Patroni's bootstrap by ``layout.bootstrap_backup`` (None: initdb): a script that restores the base
    backup, and the restore_command that replays the archive after it."""
    if layout.bootstrap_backup is None:
        return None
    wiring = Wiring(layout)
    script = member_dir / RESTORE_SCRIPT
    restore = shlex.join(wiring.barman("barman-cloud-restore", layout.bootstrap_backup))
    write(script, RESTORE_SCRIPT_TEXT % restore, 0o755, layout.db_user)
    return {"command": str(script), "restore_command": wiring.wal_restore_command}


def write_patroni(layout: Layout) -> None:
    for member, zone in PATRONI_MEMBERS.items():
        text = render(
            "patroni.yml.j2",
            member=_node(layout, member, zone, layout.member_dir(member)),
            ports=layout.ports,
            dcs={"scope": PATRONI_SCOPE, "namespace": PATRONI_NAMESPACE},
            etcd_hosts=etcd_client_urls(layout),
            client_network=layout.client_network,
            pg_bin=PG_BIN,
            secrets=layout.secrets,
            restapi_auth={"username": PATRONI_API_USER, "password": layout.secrets["patroni_api_password"]},
            etcd_auth={"username": etcd.PATRONI_USER, "password": layout.secrets["etcd_patroni_password"]},
            db=load().database,
            timing={
                "ttl": PATRONI_TTL_S,
                "loop_wait": PATRONI_LOOP_WAIT_S,
                "retry_timeout": PATRONI_RETRY_TIMEOUT_S,
                "wal_sender_timeout": WAL_SENDER_TIMEOUT_S,
            },
            archive=wal_archiving(layout),
            restore=bootstrap_from_backup(layout, layout.member_dir(member)),
        )
        write(layout.member_dir(member) / "patroni.yml", text, 0o600, layout.db_user)


def write_redis(layout: Layout) -> None:
    """Fresh replication topology: redis-a primary, redis-b its replica; the
    Sentinels learn the rest. Only called when nothing is running."""
    primary = layout.zone_address(next(iter(REDIS_NODES.values())))
    redis = layout.account("redis")
    for name, zone in REDIS_NODES.items():
        replica_of = "" if layout.zone_address(zone) == primary else primary
        node = _node(layout, name, zone, layout.redis_conf(name).parent, replica_of=replica_of)
        text = render("redis.conf.j2", node=node, ports=layout.ports, redis_password=layout.secrets["redis_password"])
        write(layout.redis_conf(name), text, 0o600, redis)  # it holds the AUTH password
    for name, zone in SENTINELS.items():
        text = render(
            "sentinel.conf.j2",
            node=_node(layout, name, zone, layout.redis_conf(name).parent),
            ports=layout.ports,
            master_name=SENTINEL_MASTER,
            primary_address=primary,
            redis_password=layout.secrets["redis_password"],
        )
        write(layout.redis_conf(name), text, 0o600, redis)  # it holds the AUTH passwords


def rules_yml() -> str:
    return render("rules.yml.j2", rules=rules(load()), group=RULES_GROUP, source=default_path().name)


def write_prometheus(layout: Layout, programs: list[Program]) -> None:
    p = layout.ports
    by_name = {prog.name: prog for prog in programs}
    write(layout.prometheus_dir / "rules.yml", rules_yml())
    write_api_targets(layout, programs)
    text = render(
        "prometheus.yml.j2",
        stack=STACK,
        regional=layout.regional,
        ports=p,
        rules_file=layout.prometheus_dir / "rules.yml",
        api_targets_file=layout.prometheus_dir / "api-targets.json",
        worker_targets=[f"{x.address}:{x.port}" for x in programs if x.name.startswith("worker-")],
        patroni_targets=[f"{layout.zone_address(z)}:{p['patroni']}" for z in PATRONI_MEMBERS.values()],
        postgres_exporter_targets=[
            f"{by_name[n].address}:{by_name[n].port}" for n in by_name if n.startswith("postgres-exporter-")
        ],
        redis_targets=[f"{layout.zone_address(z)}:{p['redis']}" for z in REDIS_NODES.values()],
    )
    write(layout.prometheus_dir / "prometheus.yml", text)


def write_api_targets(layout: Layout, programs: list[Program]) -> None:
    targets = [
        {"targets": [f"{x.address}:{x.port}"], "labels": {"zone": x.zone, "program": x.name}}
        for x in programs
        if x.group == FLEET_GROUP
    ]
    tmp = layout.prometheus_dir / "api-targets.json.tmp"
    write(tmp, json.dumps(targets, indent=2) + "\n")
    os.replace(tmp, layout.prometheus_dir / "api-targets.json")  # atomic for Prometheus' file watcher


def write_program(layout: Layout, program: Program) -> Path:
    path = layout.programs_dir / f"{program.name}.conf"
    write(path, render("program.conf.j2", p=zones.confine(layout, program), log_dir=layout.log_dir), 0o600)
    return path


def write_supervisor(layout: Layout, programs: list[Program]) -> None:
    for stale in layout.programs_dir.glob("*.conf"):
        stale.unlink()
    for program in programs:
        write_program(layout, program)
    write(layout.conf_dir / "supervisord.conf", render("supervisord.conf.j2", layout=layout, marker_env=MARKER_ENV))


def render_all(layout: Layout, programs: list[Program]) -> None:
    """Every configuration file, for a cold start."""
    prepare_dirs(layout)
    write_secrets(layout)
    write_haproxy_files(layout)
    write_haproxy_cfg(layout, programs)
    write_patroni(layout)
    write_redis(layout)
    write_prometheus(layout, programs)
    write_supervisor(layout, programs)
