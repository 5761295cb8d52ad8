"""The processes of the local stack: one spec per server, in start phases.

A spec says how supervisord runs the server, which Debian package provides
its binary, where it listens and how to tell it is healthy; nothing else
in the package hard-codes a command line.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

from local.layout import AWS_ENV, ZONE_NAMES, Layout
from pynomaly_ops.environment import environment

PG_BIN = Path("/usr/lib/postgresql/15/bin")
# Barman's cloud tools (Debian barman-cli-cloud): the WAL archive and base backups behind point-in-time
# recovery (local/pitr.py). PostgreSQL runs them as the database user, so they are the system's, not the venv's.
BARMAN_BIN = Path("/usr/bin")
BARMAN_PACKAGE = "barman-cli-cloud"
WAL_ARCHIVE_SERVER = "pynomaly-local"  # Barman's name for the cluster: its folder in the archive
PATRONI_MEMBERS = {"pg-a": "a", "pg-b": "b"}
# Patroni keeps the cluster under /<namespace>/<scope>/ in etcd; its leader key names the one primary.
PATRONI_NAMESPACE, PATRONI_SCOPE = "pynomaly", "pynomaly-local"
PATRONI_LEADER_KEY = f"/{PATRONI_NAMESPACE}/{PATRONI_SCOPE}/leader"
REDIS_NODES = {"redis-a": "a", "redis-b": "b"}  # redis-a starts as the primary
SENTINELS = {"sentinel-a": "a", "sentinel-b": "b", "sentinel-c": "c"}
# One DCS member per zone, as production's control planes are: losing a zone keeps a quorum of two.
ETCD_MEMBERS = {"etcd-a": "a", "etcd-b": "b", "etcd-c": "c"}
SENTINEL_MASTER = "pynomaly"
# Patroni's REST API asks this user (and the layout's patroni_api_password) of its unsafe requests.
PATRONI_API_USER = "patroni"
FLEET_GROUP = "fleet"
# Patroni from PyPI in a virtualenv of its own over Debian's packages (its libraries, PostgreSQL), made by
# scripts/setup: Debian 12's 3.0.2 overwrites the etcd3 leader key unconditionally when its cached view of the
# cluster is stale (fixed in 3.0.3, patroni/patroni#2689). The az-partition drill caught it: on the heal the
# old primary, which still saw itself as leader, took the key back from the new one, a second failover.
PATRONI_VERSION = "3.0.4"
PATRONI_VENV = Path("/opt/pynomaly-ops") / f"patroni-{PATRONI_VERSION}"  # outside /root: postgres runs it
PATRONI = str(PATRONI_VENV / "bin" / "patroni")
# Patroni timing (patroni.yml): fast failover, ttl >= loop_wait + 2 * retry_timeout. The write RTO follows
# ttl (the standby takes the leader key once the lost primary's expires): ttl 10 gave a median of 10.7 s over
# five database-failover drills; 8 brings it under 10 s while a primary still rides out a 3 s stall.
# A stall of the etcd member a primary's Patroni talks to is longer: its requests time out one member
# after another until retry_timeout, and Patroni 3.0 demotes a primary on a DCS error (one CI run: etcd
# leader frozen 16 s, primary demoted, 19 writes refused). failsafe_mode (patroni.yml) keeps the primary
# while it can reach every member's REST API, so only a primary that is really cut off steps down.
PATRONI_TTL_S = 8
PATRONI_LOOP_WAIT_S = 2
PATRONI_RETRY_TIMEOUT_S = 3
# A primary cut off with its zone demotes by a fast shutdown, which waits for its WAL senders; one sending
# to a standby across the cut would hold it until wal_sender_timeout (60 s by default): seen live, the
# shutdown outlived the cut and Patroni 3.0.2 then started a second postmaster and removed the data
# directory under the first. A sender that hears nothing for a TTL gives up, so the demotion ends in time.
WAL_SENDER_TIMEOUT_S = PATRONI_TTL_S
# A member the supervisor restarts after a crash stays away this long, as a lost
# database host would: the synchronous standby takes over instead of racing the
# crashed primary's restart for the leader lock. The lock expires at most ttl after
# the crash and the standby acts on its next loop; retry_timeout is the margin.
# `up` starts members at once.
PATRONI_CRASH_RESTART_DELAY_S = PATRONI_TTL_S + PATRONI_LOOP_WAIT_S + PATRONI_RETRY_TIMEOUT_S
START_NOW_FILE = "start-now"
# moto's dashboard; local/moto_server.py answers 503 there until the queues and buckets exist.
MOTO_HEALTH_PATH = "/moto-api/"


class Phase(IntEnum):
    """Start order: each phase waits until the previous one is healthy."""

    BASE = 1  # no dependencies
    DATABASE = 2  # needs etcd
    APP = 3  # needs the database, the queue and the buckets


class Check:
    TCP = "tcp"
    HTTP = "http"
    REDIS = "redis"
    SENTINEL = "sentinel"
    HAPROXY = "haproxy"


@dataclass(frozen=True)
class Program:
    name: str
    command: list[str]
    package: str  # the Debian (or PyPI) package that provides the executable
    phase: Phase
    address: str
    port: int
    check: str = Check.TCP
    check_path: str = ""
    zone: str = ""
    user: str | None = None
    directory: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    stop_signal: str = "TERM"
    stop_wait_s: int = 10
    group: str | None = None  # the instance group (the "ASG")
    wrapped: str | None = None  # the server's executable when command[0] is a wrapper
    check_password: str | None = field(default=None, repr=False)  # AUTH of the health check (Redis, Sentinel)
    umask: str | None = None  # of the process: what it writes itself (Redis' config rewrites) stays its own

    @property
    def priority(self) -> int:
        """supervisord stops the highest first: the service, then the databases, etcd last."""
        return 10 if self.name in ETCD_MEMBERS else 100 * int(self.phase)

    @property
    def executable(self) -> str:
        return self.wrapped or self.command[0]

    @property
    def command_line(self) -> str:
        # supervisord expands %(...)s: escape literal percent signs.
        return shlex.join(self.command).replace("%", "%%")

    @property
    def environment(self) -> str:
        return ",".join(f'{k}="{v}"'.replace("%", "%%") for k, v in self.env.items())

    @property
    def check_url(self) -> str:
        return f"http://{self.address}:{self.port}{self.check_path}"


def binary(name: str) -> str:
    """Absolute path of a binary from the virtualenv first, then PATH."""
    venv = Path(sys.executable).parent / name
    return str(venv) if venv.exists() else (shutil.which(name) or name)


def zone_of(index: int) -> str:
    """Zones assigned round robin, like an ASG spreading over AZs."""
    return ZONE_NAMES[index % len(ZONE_NAMES)]


def etcd_client_urls(layout: Layout) -> list[str]:
    return [f"{layout.zone_address(zone)}:{layout.ports['etcd']}" for zone in ETCD_MEMBERS.values()]


def etcd_programs(layout: Layout) -> list[Program]:
    """A three-member etcd cluster, one member per zone, each on its zone's address."""
    p = layout.ports
    peers = ",".join(f"{name}=http://{layout.zone_address(z)}:{p['etcd_peer']}" for name, z in ETCD_MEMBERS.items())
    return [
        Program(
            name=name,
            command=[
                "/usr/bin/etcd",
                f"--name={name}",
                f"--data-dir={layout.db_dir / name}",
                f"--listen-client-urls=http://{layout.zone_address(zone)}:{p['etcd']}",
                f"--advertise-client-urls=http://{layout.zone_address(zone)}:{p['etcd']}",
                f"--listen-peer-urls=http://{layout.zone_address(zone)}:{p['etcd_peer']}",
                f"--initial-advertise-peer-urls=http://{layout.zone_address(zone)}:{p['etcd_peer']}",
                f"--initial-cluster={peers}",
                f"--initial-cluster-token=pynomaly-local-{layout.ports['etcd']}",
                # A member cut off from the others keeps its term until it can win a pre-vote: on its return it
                # does not force an election (etcd 3.4's default, off, did: a partition's heal then cost the
                # healthy Patroni leader its DCS for longer than retry_timeout, a second write outage of 5.2 s).
                "--pre-vote=true",
                "--log-level=warn",
            ],
            package="etcd-server",
            phase=Phase.BASE,
            address=layout.zone_address(zone),
            port=p["etcd"],
            check=Check.HTTP,
            check_path="/health",  # 200 only while the member sees a leader: a quorum
            zone=zone,
            user=layout.account("etcd"),
        )
        for name, zone in ETCD_MEMBERS.items()
    ]


def base_programs(layout: Layout) -> list[Program]:
    p, prometheus = layout.ports, layout.account("prometheus")
    programs = [
        *etcd_programs(layout),
        Program(
            name="moto",
            # moto's server plus the stack's queues and buckets, created again whenever it (re)starts
            command=[sys.executable, "-m", "local.moto_server", "--state-dir", str(layout.state_dir)],
            package="moto[server] (PyPI, in the project's [local] extra)",
            phase=Phase.BASE,
            address=layout.regional,
            port=p["moto"],
            check=Check.HTTP,
            check_path=MOTO_HEALTH_PATH,
            wrapped=binary("moto_server"),
        ),
        Program(
            name="haproxy",
            command=["/usr/sbin/haproxy", "-W", "-db", "-f", str(layout.haproxy_cfg)],
            package="haproxy",
            phase=Phase.BASE,
            address=layout.regional,
            port=p["lb_stats"],
            check=Check.HAPROXY,
            stop_signal="USR1",  # soft stop: finish in-flight requests
            user=layout.account("haproxy"),
        ),
        Program(
            name="prometheus",
            command=[
                "/usr/bin/prometheus",
                f"--config.file={layout.prometheus_dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={layout.prometheus_dir / 'data'}",
                f"--web.listen-address={layout.regional}:{p['prometheus']}",
                # No lifecycle API (/-/reload, /-/quit): anyone who reaches the port could stop it. A changed
                # configuration is applied with SIGHUP (local/stack.py).
                "--log.level=warn",
            ],
            package="prometheus",
            phase=Phase.BASE,
            address=layout.regional,
            port=p["prometheus"],
            check=Check.HTTP,
            check_path="/-/ready",
            user=prometheus,
        ),
        Program(
            name="node-exporter",
            command=[
                "/usr/bin/prometheus-node-exporter",
                f"--web.listen-address={layout.regional}:{p['node_exporter']}",
                "--collector.disable-defaults",
                "--collector.cpu",
                "--collector.meminfo",
                "--collector.filesystem",
                "--collector.loadavg",
            ],
            package="prometheus-node-exporter",
            phase=Phase.BASE,
            address=layout.regional,
            port=p["node_exporter"],
            check=Check.HTTP,
            check_path="/metrics",
            user=prometheus,
        ),
        Program(
            name="redis-exporter",
            command=[
                "/usr/bin/prometheus-redis-exporter",
                f"-web.listen-address={layout.regional}:{p['redis_exporter']}",
                f"-redis.addr=redis://{layout.zone_address('a')}:{p['redis']}",
                # Each node's AUTH password, by the address Prometheus asks it to scrape (a JSON file, 0600).
                f"-redis.password-file={redis_exporter_passwords(layout)}",
            ],
            package="prometheus-redis-exporter",
            phase=Phase.BASE,
            address=layout.regional,
            port=p["redis_exporter"],
            check=Check.HTTP,
            check_path="/metrics",
            env={"REDIS_PASSWORD": layout.secrets["redis_password"]},  # -redis.addr's; never on the command line
            user=prometheus,
        ),
    ]
    programs += [_redis(layout, name, zone) for name, zone in REDIS_NODES.items()]
    programs += [_sentinel(layout, name, zone) for name, zone in SENTINELS.items()]
    programs += [_postgres_exporter(layout, member, zone) for member, zone in PATRONI_MEMBERS.items()]
    return programs


def redis_exporter_passwords(layout: Layout) -> Path:
    """redis_exporter's ``-redis.password-file``: ``{"redis://address:port": password}`` (local/render.py)."""
    return layout.prometheus_dir / "redis-exporter-passwords.json"  # read as Prometheus' account


def _redis(layout: Layout, name: str, zone: str) -> Program:
    return Program(
        name=name,
        command=["/usr/bin/redis-server", str(layout.redis_conf(name))],
        package="redis-server",
        phase=Phase.BASE,
        address=layout.zone_address(zone),
        port=layout.ports["redis"],
        check=Check.REDIS,
        zone=zone,
        check_password=layout.secrets["redis_password"],
        umask="077",
        user=layout.account("redis"),
    )


def _sentinel(layout: Layout, name: str, zone: str) -> Program:
    return Program(
        name=name,
        command=["/usr/bin/redis-sentinel", str(layout.redis_conf(name))],
        package="redis-sentinel",
        phase=Phase.BASE,
        address=layout.zone_address(zone),
        port=layout.ports["sentinel"],
        check=Check.SENTINEL,
        zone=zone,
        check_password=layout.secrets["redis_password"],
        umask="077",  # Sentinel rewrites its file (it holds the passwords) with 0644 less the umask
        user=layout.account("redis"),
    )


def _postgres_exporter(layout: Layout, member: str, zone: str) -> Program:
    addr, p = layout.zone_address(zone), layout.ports
    dsn = (
        f"postgresql://postgres:{layout.secrets['postgres_password']}@{addr}:{p['postgres']}/postgres"
        "?sslmode=disable&connect_timeout=2"
    )
    return Program(
        name=f"postgres-exporter-{zone}",
        command=[
            "/usr/bin/prometheus-postgres-exporter",
            f"--web.listen-address={addr}:{p['postgres_exporter']}",
        ],
        package="prometheus-postgres-exporter",
        phase=Phase.BASE,
        address=addr,
        port=p["postgres_exporter"],
        check=Check.HTTP,
        check_path="/metrics",
        zone=zone,
        env={"DATA_SOURCE_NAME": dsn},
        user=layout.account("prometheus"),
    )


def patroni_program(member: str) -> str:
    """The supervisord program that runs a Patroni member."""
    return f"patroni-{PATRONI_MEMBERS[member]}"


def _patroni_command(layout: Layout, member: str) -> list[str]:
    d = layout.member_dir(member)
    start_now = shlex.quote(str(d / START_NOW_FILE))
    script = (
        f"if [ -e {start_now} ]; then rm -f {start_now}; else sleep {PATRONI_CRASH_RESTART_DELAY_S}; fi; "
        f"exec {PATRONI} {shlex.quote(str(d / 'patroni.yml'))}"
    )
    return ["/bin/sh", "-c", script]


def database_programs(layout: Layout) -> list[Program]:
    return [
        Program(
            name=patroni_program(member),
            command=_patroni_command(layout, member),
            package=f"patroni {PATRONI_VERSION} in {PATRONI_VENV} (scripts/setup)",
            phase=Phase.DATABASE,
            address=layout.zone_address(zone),
            port=layout.ports["patroni"],
            check=Check.HTTP,
            check_path="/health",
            zone=zone,
            user=layout.db_user,
            directory=layout.member_dir(member),
            env={"HOME": str(layout.member_dir(member))} | AWS_ENV,  # the WAL archiver writes to the local S3
            stop_wait_s=30,
            wrapped=PATRONI,
        )
        for member, zone in PATRONI_MEMBERS.items()
    ]


def api_program(layout: Layout, index: int, service_env: dict[str, str]) -> Program:
    zone = zone_of(index)
    name = f"api-{index}"
    port = layout.ports["api"] + index
    env = service_env | environment(
        host=layout.zone_address(zone),
        port=port,
        instance_id=name,
        # Detection inline (no process pool): in production each instance has its
        # own cores; here every instance shares two, and a pool per instance
        # (spawned, re-importing scikit-learn) triples the start-up time.
        detector_processes=0,
    )
    return Program(
        name=name,
        command=[sys.executable, "-m", "service.api"],
        package="the project's [service] extra (pip install -e '.[local]')",
        phase=Phase.APP,
        address=layout.zone_address(zone),
        port=port,
        check=Check.HTTP,
        check_path="/health",
        zone=zone,
        env=env,
        group=FLEET_GROUP,
        stop_wait_s=15,
    )


def worker_program(layout: Layout, index: int, service_env: dict[str, str]) -> Program:
    zone = zone_of(index)
    port = layout.ports["worker_metrics"] + index
    host = layout.zone_address(zone)
    env = service_env | environment(host=host, worker_metrics_port=port, instance_id=f"worker-{index}")
    return Program(
        name=f"worker-{index}",
        command=[sys.executable, "-m", "service.worker"],
        package="the project's [service] extra (pip install -e '.[local]')",
        phase=Phase.APP,
        address=layout.zone_address(zone),
        port=port,
        check=Check.HTTP,
        check_path="/metrics",
        zone=zone,
        env=env,
        stop_wait_s=30,
    )


def app_programs(layout: Layout, service_env: dict[str, str]) -> list[Program]:
    apis = [api_program(layout, i, service_env) for i in range(layout.instances)]
    return apis + [worker_program(layout, i, service_env) for i in range(layout.workers)]


def all_programs(layout: Layout, service_env: dict[str, str]) -> list[Program]:
    return base_programs(layout) + database_programs(layout) + app_programs(layout, service_env)
