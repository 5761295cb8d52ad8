"""How the pieces find each other: endpoints, the service's environment and
the stack outputs (the same keys as ``pulumi stack output --json``)."""

from __future__ import annotations

import shlex

from local.layout import AWS_ENV, STACK, Layout
from local.programs import (
    BARMAN_BIN,
    FLEET_GROUP,
    PATRONI_MEMBERS,
    SENTINEL_MASTER,
    SENTINELS,
    WAL_ARCHIVE_SERVER,
)
from local.rules import local_alarms
from pynomaly_ops import outputs as keys
from pynomaly_ops.alarms import Target, names_by_key
from pynomaly_ops.baselines import load
from pynomaly_ops.environment import environment
from pynomaly_ops.naming import queue_names, resource_name
from pynomaly_ops.settings import Queue as QueueSettings
from pynomaly_ops.settings import Storage as StorageSettings
from pynomaly_ops.settings import schema

APP_DB = "pynomaly"
# A member cut off by a partition never resets its connections: without these a client waits on a half-open
# one for the kernel's retransmissions (minutes). Keepalives find an idle connection dead in 4 s; an
# unacknowledged write gives up after 3 s, and libpq's next connection finds the new primary.
DEAD_PEER_DETECTION = "keepalives=1 keepalives_idle=2 keepalives_interval=1 keepalives_count=2 tcp_user_timeout=3000"
APP_DB_USER = "pynomaly"
MASK = "********"


def tier_defaults(tier: str) -> dict[str, object]:
    """A tier's settings at Pulumi.yaml's defaults (the local stack has no stack file)."""
    prefix = tier + "."
    return {k.removeprefix(prefix): spec.get("default") for k, spec in schema().items() if k.startswith(prefix)}


def queue_settings() -> QueueSettings:
    return QueueSettings.model_validate(tier_defaults("queue"))


def storage_settings() -> StorageSettings:
    return StorageSettings.model_validate(tier_defaults("storage"))


class Wiring:
    def __init__(self, layout: Layout):
        self.layout = layout
        self.ports = layout.ports

    # --- endpoints ---------------------------------------------------------
    @property
    def aws_endpoint_url(self) -> str:
        return f"http://{self.layout.regional}:{self.ports['moto']}"

    @property
    def queue_names(self) -> tuple[str, str]:
        return queue_names(STACK)

    def queue_url(self, name: str) -> str:
        # moto's URL shape: <endpoint>/<account>/<name>
        return f"{self.aws_endpoint_url}/123456789012/{name}"

    @property
    def artifacts_bucket(self) -> str:
        return resource_name(STACK, "storage", "artifacts")

    @property
    def backups_bucket(self) -> str:
        return resource_name(STACK, "storage", "backups")

    WAL_ARCHIVE_PREFIX = "postgres/barman"  # Barman's archive in the backups bucket: <prefix>/<server>/{base,wals}

    @property
    def wal_archive_url(self) -> str:
        return f"s3://{self.backups_bucket}/{self.WAL_ARCHIVE_PREFIX}"

    def barman(self, tool: str, *positional: str, options: tuple[str, ...] = ()) -> list[str]:
        """A barman-cloud command line against the local S3: ``tool [options] <archive> <server> [positional]``."""
        where = ("--cloud-provider", "aws-s3", "--endpoint-url", self.aws_endpoint_url)
        return [str(BARMAN_BIN / tool), *where, *options, self.wal_archive_url, WAL_ARCHIVE_SERVER, *positional]

    # PostgreSQL's shutdown waits for a last archive pass of three tries a segment. From a zone cut off the
    # network, barman-cloud took 12 s a try to give up, so a cut-off primary's demotion outlasted Patroni's
    # next loop, which (3.0.2) then demoted it again from its main thread: two postmasters, a failed
    # pg_rewind, the data directory removed. The archive is first reached with a bounded TCP connect, so an
    # unreachable one fails the try at once; PostgreSQL keeps the segment and tries again later.
    ARCHIVE_REACH_S = 1

    @property
    def wal_archive_command(self) -> str:
        """PostgreSQL's archive_command (it fills in %p, the segment's path)."""
        s3 = f"{self.layout.regional}/{self.ports['moto']}"  # where aws_endpoint_url points
        reach = ["timeout", str(self.ARCHIVE_REACH_S), "bash", "-c", f": </dev/tcp/{s3}"]
        archive = self.barman("barman-cloud-wal-archive", "%p", options=("--gzip",))
        return f"{shlex.join(reach)} && {shlex.join(archive)}"

    @property
    def wal_restore_command(self) -> str:
        """PostgreSQL's restore_command (%f the segment it wants, %p where to put it)."""
        return shlex.join(self.barman("barman-cloud-wal-restore", "%f", "%p"))

    @property
    def db_members(self) -> list[str]:
        return [self.layout.zone_address(zone) for zone in PATRONI_MEMBERS.values()]

    def db_dsn(self, user: str = APP_DB_USER, password: str | None = None, dbname: str = APP_DB) -> str:
        """libpq multi-host conninfo: the client finds the writable member itself."""
        password = password or self.layout.secrets["app_db_password"]
        hosts = ",".join(self.db_members)
        ports = ",".join(str(self.ports["postgres"]) for _ in self.db_members)
        return (
            f"host={hosts} port={ports} dbname={dbname} user={user} password={password} "
            f"target_session_attrs=read-write connect_timeout=3 {DEAD_PEER_DETECTION}"
        )

    def writer_dsn(self, user: str, password: str, dbname: str = APP_DB, with_password: bool = True) -> str:
        """Through the writer endpoint (HAProxy, routed by Patroni's /primary check), as RDS's: always the
        primary, where a multi-host string may try a standby first, and libpq gives up on a standby that
        refuses the connection (a database it has not replayed yet) instead of trying the next host.
        ``with_password`` off is for a command line (give it in PGPASSWORD: argv is readable by every user)."""
        secret = f"password={password} " if with_password else ""
        host, port = self.layout.regional, self.ports["db_writer"]
        return f"host={host} port={port} dbname={dbname} user={user} {secret}connect_timeout=3"

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return [(self.layout.zone_address(zone), self.ports["sentinel"]) for zone in SENTINELS.values()]

    def regional(self, port_name: str) -> str:
        return f"{self.layout.regional}:{self.ports[port_name]}"

    # --- the service -------------------------------------------------------
    def service_env(self) -> dict[str, str]:
        return AWS_ENV | environment(
            db_dsn=self.db_dsn(),
            redis_sentinels=self.sentinels,
            redis_sentinel_master=SENTINEL_MASTER,
            # Redis and the Sentinels require AUTH: the password as a file, as the AUTH token reaches production
            redis_password_file=self.layout.redis_password_file,
            aws_endpoint_url=self.aws_endpoint_url,
            queue_url=self.queue_url(self.queue_names[0]),
            artifacts_bucket=self.artifacts_bucket,
            bootstrap_api_key=self.layout.secrets["api_key"],
        )

    # --- outputs -----------------------------------------------------------
    def outputs(self) -> dict[str, object]:
        jobs, dlq = self.queue_names
        data = {
            keys.LOAD_BALANCER_URL: f"http://{self.regional('lb')}",
            keys.DB_WRITER_ENDPOINT: self.regional("db_writer"),
            keys.DB_READER_ENDPOINT: self.regional("db_reader"),
            keys.REDIS_PRIMARY_ENDPOINT: self.regional("redis_writer"),
            keys.REDIS_READER_ENDPOINT: self.regional("redis_reader"),
            keys.QUEUE_URL: self.queue_url(jobs),
            keys.DEAD_LETTER_QUEUE_URL: self.queue_url(dlq),
            keys.ARTIFACTS_BUCKET: self.artifacts_bucket,
            keys.BACKUPS_BUCKET: self.backups_bucket,
            keys.ASG_NAME: resource_name(STACK, "app", FLEET_GROUP),
            keys.ALARMS: names_by_key(local_alarms(load()), STACK, frozenset({Target.PROMETHEUS})),
            keys.DB_WRITER_DSN: self.db_dsn(),
            keys.API_KEY: self.layout.secrets["api_key"],
            keys.AWS_ENDPOINT_URL: self.aws_endpoint_url,
            keys.PROMETHEUS_URL: f"http://{self.regional('prometheus')}",
        }
        # The one shape, checked; every key of the model, null where AWS-only.
        return keys.StackOutputs.model_validate(data).model_dump()

    def masked_outputs(self) -> dict[str, object]:
        """:meth:`outputs` with its secrets (the API key, the DSN's password) replaced by :data:`MASK`: what a
        terminal, a log or a CI transcript may show. In-process readers (drills, load tests) read the file."""
        data = self.outputs()
        data[keys.API_KEY] = MASK
        data[keys.DB_WRITER_DSN] = str(data[keys.DB_WRITER_DSN]).replace(self.layout.secrets["app_db_password"], MASK)
        return data
