"""Where the local stack lives: zones, ports and directories.

Everything a run needs to find again (ports, passwords, the database
directory) is recorded in the state directory at the first ``up``, so
``status``/``down``/``scale`` act on the stack that is running, whatever the
environment says later.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import secrets
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from local.secretfile import secret_dir, write_secret
from pynomaly_ops import REPO_ROOT

STACK = "local"
STATE_ENV = "PYNOMALY_LOCAL_STATE"
# Put in every child's environment: finds a crashed run's orphans.
MARKER_ENV = "PYNOMALY_LOCAL_STACK"
PORT_OFFSET_ENV = "PYNOMALY_LOCAL_PORT_OFFSET"
PORT_ENV_PREFIX = "PYNOMALY_LOCAL_PORT_"
DEFAULT_STATE_DIR = REPO_ROOT / ".local-stack"
# The servers' own files (the database's, etcd's, Redis'...) must be reachable by the accounts they run as;
# used when the state directory is not (e.g. a checkout under /root, mode 700).
SHARED_DB_ROOT = Path("/var/lib/pynomaly-local")
DB_USER_WHEN_ROOT = "postgres"
# Run as root, the servers from Debian's packages run as the accounts those packages made, as their systemd
# units do (the database as DB_USER_WHEN_ROOT): only supervisord and the project's Python programs (moto, the
# API, the workers: their interpreter may live where no other account reaches, /root here) keep root.
SERVER_ACCOUNTS = {"etcd": "etcd", "redis": "redis", "haproxy": "haproxy", "prometheus": "prometheus"}
# Every secret of a stack, generated at its first `up` and recorded in its layout: the database roles', the API
# key, Redis' AUTH password (the Redis nodes and the Sentinels, which the service reaches with the one AUTH token
# it is given, as redis-py's Sentinel client does), etcd's root and Patroni users, and Patroni's REST API user.
SECRET_NAMES = (
    "postgres_password",
    "replication_password",
    "app_db_password",
    "api_key",
    "redis_password",
    "etcd_root_password",
    "etcd_patroni_password",
    "patroni_api_password",
)
# AF_UNIX paths are limited to 108 bytes; sockets move to /tmp when the
# state directory is deeper than this.
MAX_SOCKET_DIR = 60

ZONE_NAMES = ("a", "b", "c")
# Without --zones every zone is a loopback address of this network namespace; the load balancer, SQS/S3 and
# monitoring are regional, on 127.0.0.1.
LOOPBACK_ZONES: dict[str, str] = {"a": "127.0.1.1", "b": "127.0.2.1", "c": "127.0.3.1"}
LOOPBACK_REGIONAL = "127.0.0.1"
# With --zones (local/zones.py) each zone is a network namespace on one bridge, in 10.213.<net_id>.0/24:
# the bridge (the regional side, in this namespace) is .1, zone a .11, b .12, c .13. No route leads off the
# machine: the namespaces have no default route and the root namespace forwards nothing from the bridge.
ZONED_PREFIX = "10.213"
ZONED_NETWORK = f"{ZONED_PREFIX}.0.0/16"
# moto accepts any credentials; the service and the database's WAL archiver are given these.
AWS_ENV = {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}

# Default ports. A zonal server listens on the same port on its zone's address;
# the i-th API instance / worker uses port + i.
DEFAULT_PORTS: dict[str, int] = {
    "lb": 18080,  # HAProxy: the load balancer
    "lb_stats": 18404,  # HAProxy: stats page and /metrics
    "db_writer": 15433,  # HAProxy -> Patroni /primary
    "db_reader": 15434,  # HAProxy -> Patroni /replica
    "redis_writer": 16479,  # HAProxy -> role:master
    "redis_reader": 16480,  # HAProxy -> role:slave
    "postgres": 15432,
    "pitr_restore": 15435,  # a point-in-time restore's own instance (local/pitr.py), never a member's port
    "patroni": 18008,
    "etcd": 12379,
    "etcd_peer": 12380,
    "redis": 16379,
    "sentinel": 26379,
    "moto": 15000,
    "moto_metrics": 19150,  # the queues' depths for Prometheus (CloudWatch's AWS/SQS metrics on AWS)
    "prometheus": 19090,
    "postgres_exporter": 19187,
    "redis_exporter": 19121,
    "node_exporter": 19100,
    "api": 18100,
    "worker_metrics": 18200,
}


class LayoutError(ValueError):
    """The local stack's settings are wrong; the message says how to fix them."""


def ports_from_env(env: Mapping[str, str] | None = None) -> dict[str, int]:
    """Default ports shifted by ``$PYNOMALY_LOCAL_PORT_OFFSET``, each overridable
    with ``$PYNOMALY_LOCAL_PORT_<NAME>`` (e.g. PYNOMALY_LOCAL_PORT_LB=8080)."""
    env = os.environ if env is None else env
    offset = _int_env(env, PORT_OFFSET_ENV, 0)
    ports = {name: port + offset for name, port in DEFAULT_PORTS.items()}
    for name in ports:
        key = PORT_ENV_PREFIX + name.upper()
        if key in env:
            ports[name] = _int_env(env, key, 0)
    bad = {n: p for n, p in ports.items() if not 1024 <= p <= 65535 - 64}
    if bad:
        raise LayoutError(f"ports out of range 1024-65471: {bad}; fix {PORT_OFFSET_ENV} or {PORT_ENV_PREFIX}<NAME>")
    return ports


def _with_new_ports(recorded: dict[str, int]) -> dict[str, int]:
    """A stack recorded before a port was added gets it at the same offset as its load balancer's."""
    offset = recorded["lb"] - DEFAULT_PORTS["lb"]
    return {name: port + offset for name, port in DEFAULT_PORTS.items()} | recorded


def _int_env(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise LayoutError(f"{key}={raw!r} is not an integer") from None


def traversable_by(user: str, path: Path) -> bool:
    """Whether ``user`` can reach ``path`` (every parent searchable)."""
    probe = subprocess.run(["test", "-x", str(path)], user=user, capture_output=True, check=False)
    return probe.returncode == 0


def check_accounts(users: list[str]) -> None:
    """Every account the servers run as exists: each is made by its server's Debian package."""
    missing = [u for u in users if not _has_account(u)]
    if missing:
        raise LayoutError(
            f"no account {', '.join(missing)} on this machine: the servers' Debian packages make them"
            " (scripts/setup installs them all, as root)"
        )


def _has_account(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def _digest(path: Path) -> str:
    return hashlib.sha1(str(path).encode()).hexdigest()[:12]


@dataclass
class Layout:
    """The recorded shape of one local stack."""

    state_dir: Path
    db_dir: Path
    run_dir: Path
    db_user: str | None  # None: the current user (not root)
    ports: dict[str, int]
    secrets: dict[str, str]
    instances: int
    workers: int = 2
    # A base backup in the archive to build the database from instead of initdb (the disaster-recovery
    # rebuild, local/disaster.py); cleared once the rebuilt stack is up.
    bootstrap_backup: str | None = None
    # Each zone in its own network namespace (`local up --zones`, root only); net_id numbers its subnet.
    zoned: bool = False
    net_id: int | None = None

    FILE = "stack.json"

    # --- addresses ---------------------------------------------------------
    @property
    def zones(self) -> dict[str, str]:
        """zone -> the address its servers listen on."""
        if not self.zoned:
            return dict(LOOPBACK_ZONES)
        return {zone: f"{self._subnet}.{11 + i}" for i, zone in enumerate(ZONE_NAMES)}

    def zone_address(self, zone: str) -> str:
        return self.zones[zone]

    @property
    def regional(self) -> str:
        """Where the regional servers listen, reachable from every zone (zoned: the bridge's address)."""
        return f"{self._subnet}.1" if self.zoned else LOOPBACK_REGIONAL

    @property
    def client_network(self) -> str:
        """The addresses the stack's own clients connect from (PostgreSQL's pg_hba)."""
        return f"{self._subnet}.0/24" if self.zoned else "127.0.0.0/8"

    @property
    def _subnet(self) -> str:
        return f"{ZONED_PREFIX}.{self.net_id}"

    # --- paths -------------------------------------------------------------
    @property
    def conf_dir(self) -> Path:
        return self.state_dir / "conf"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def programs_dir(self) -> Path:
        return self.conf_dir / "programs"

    @property
    def supervisor_socket(self) -> Path:
        return self.run_dir / "supervisor.sock"

    # --- the servers' own files: in directories their accounts own --------------
    def account(self, server: str) -> str | None:
        """The account ``server`` (a key of SERVER_ACCOUNTS) runs as; None: the current user's (not root)."""
        return SERVER_ACCOUNTS[server] if self.db_user else None

    def server_dir(self, server: str) -> Path:
        """``server``'s configuration and data, beside the database's: reachable by the account it runs as."""
        return self.db_dir / server

    def redis_conf(self, node: str) -> Path:
        """A Redis node's or Sentinel's configuration, in its own data directory: Sentinel rewrites it."""
        return self.server_dir("redis") / node / f"{node}.conf"

    @property
    def haproxy_cfg(self) -> Path:
        return self.server_dir("haproxy") / "haproxy.cfg"

    @property
    def haproxy_socket(self) -> Path:
        return self.run_dir / "haproxy" / "haproxy.sock"  # run_dir keeps socket paths short

    @property
    def haproxy_flags(self) -> Path:
        """HAProxy's map of switches changed at run time (``maintenance on|off``)."""
        return self.server_dir("haproxy") / "flags.map"

    @property
    def maintenance_page(self) -> Path:
        return self.server_dir("haproxy") / "maintenance.html"

    @property
    def prometheus_dir(self) -> Path:
        """Prometheus' configuration, rules and scrape targets (its TSDB in ``data/``)."""
        return self.server_dir("prometheus")

    @property
    def outputs_file(self) -> Path:
        return self.state_dir / "outputs.json"

    @property
    def secrets_dir(self) -> Path:
        """Secrets handed to programs as files (0700; each file 0600)."""
        return self.state_dir / "secrets"

    @property
    def redis_password_file(self) -> Path:
        """Redis' AUTH password, as the service reads it (``PYNOMALY_REDIS_PASSWORD_FILE``)."""
        return self.secrets_dir / "redis-password"

    def write_secret_files(self) -> None:
        secret_dir(self.secrets_dir)
        write_secret(self.redis_password_file, self.secrets["redis_password"] + "\n")

    def member_dir(self, member: str) -> Path:
        return self.db_dir / member

    # --- persistence -------------------------------------------------------
    def save(self) -> None:
        data = asdict(self) | {k: str(getattr(self, k)) for k in ("state_dir", "db_dir", "run_dir")}
        write_secret(self.state_dir / self.FILE, json.dumps(data, indent=2) + "\n")  # it holds passwords

    @classmethod
    def load(cls, state_dir: Path) -> Layout | None:
        path = state_dir / cls.FILE
        if not path.exists():
            return None
        # Keys an older version recorded and this one no longer has are dropped.
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in json.loads(path.read_text()).items() if k in known}
        for key in ("state_dir", "db_dir", "run_dir"):
            data[key] = Path(data[key])
        data["ports"] = _with_new_ports(data["ports"])
        layout = cls(**data)
        missing = [n for n in SECRET_NAMES if n not in layout.secrets]
        if missing:  # a stack recorded before these secrets existed gets them, once
            layout.secrets |= {n: secrets.token_urlsafe(24) for n in missing}
            layout.save()
        return layout

    @classmethod
    def create(cls, state_dir: Path, instances: int, zoned: bool = False) -> Layout:
        """A new layout for ``state_dir``: ports from the environment, fresh secrets."""
        state_dir = state_dir.resolve()
        state_dir.mkdir(parents=True, exist_ok=True)
        db_user = DB_USER_WHEN_ROOT if os.geteuid() == 0 else None
        accounts = [db_user, *SERVER_ACCOUNTS.values()] if db_user else []
        check_accounts(accounts)
        reachable = all(traversable_by(user, state_dir) for user in accounts)
        db_dir = state_dir / "db" if reachable else SHARED_DB_ROOT / _digest(state_dir)
        run_dir = state_dir / "run"
        if len(str(run_dir)) > MAX_SOCKET_DIR or not reachable:  # HAProxy makes its socket there
            run_dir = Path("/tmp") / f"pynomaly-local-{_digest(state_dir)}"
        ports = ports_from_env()
        return cls(
            state_dir=state_dir,
            db_dir=db_dir,
            run_dir=run_dir,
            db_user=db_user,
            ports=ports,
            secrets={n: secrets.token_urlsafe(24) for n in SECRET_NAMES},
            instances=instances,
            zoned=zoned,
            net_id=net_id_for(ports) if zoned else None,
        )


def net_id_for(ports: Mapping[str, int]) -> int:
    """A zoned stack's subnet number, from its load balancer's port: two stacks that can run side by side
    (different ports) get different subnets, and the same ports always get the same one."""
    return (ports["lb"] // 10) % 250 + 1


def state_dir_from(option: Path | None) -> Path:
    """The state directory: the option, else ``$PYNOMALY_LOCAL_STATE``, else ``.local-stack/``."""
    if option is not None:
        return option.resolve()
    return Path(os.environ.get(STATE_ENV) or DEFAULT_STATE_DIR).resolve()
