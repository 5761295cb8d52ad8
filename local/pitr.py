"""Point-in-time recovery of the local stack's database (001 Backup and Recovery, "Data Corruption"; 000 Backup &
Recovery): the primary archives every WAL segment to the backups bucket (patroni.yml's archive_command), a base
backup starts every recovery, and a restore replays the archive up to a moment into a new data directory on its
own port, never over a member. Putting the lost rows back into the live database is a separate, deliberate step.

The tool is Barman's cloud client (Debian ``barman-cli-cloud``): it writes to S3 through boto3, so the same
commands work against moto's plain-HTTP endpoint and against AWS. pgBackRest's S3 repository speaks only HTTPS,
and WAL-G is packaged neither in Debian nor on PyPI.

Like local/recovery.py: typed, JSON-friendly arguments, ``state_dir`` last, a dict back; what a restore makes (its
data directory, its postmaster, the WAL fetches it runs) is gone when it returns, whatever happened, and
``remove_restores`` ends whatever a killed run left behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from local import aws, health, probes
from local.layout import AWS_ENV, Layout
from local.procs import holder, pids_under
from local.programs import BARMAN_PACKAGE, PG_BIN, WAL_ARCHIVE_SERVER
from local.recovery import COMMAND_TIMEOUT_S, RecoveryError, connect_superuser, run_tool
from local.render import own_dir
from local.stack import running_stack
from local.wiring import APP_DB, Wiring

PITR_TABLE = "drill_pitr_rows"  # the drill's own rows: the fault deletes these, never the service's
RESTORES = "pitr-restores"  # under the database directory, which the database user can reach
POLL_S = 0.5  # the polling interval of the deadline-bounded waits below
FIGURES = {
    "await_archived": ("RPO: T's WAL archived after (s)",),
    "restore_to_time": ("rows written before T missing", "rows written after T present"),
    "known_rows_missing": ("rows in the backup missing",),
}


def _env(home: Path) -> dict[str, str]:
    """For a tool run as the database user in ``home``: barman-cloud reads the local S3's credentials from
    the environment (and a restored server passes them on to its restore_command)."""
    return os.environ | AWS_ENV | {"HOME": str(home)}


def _barman(layout: Layout, args: list[str], what: str, cwd: Path) -> str:
    return run_tool(args, _env(cwd), what, user=layout.db_user, cwd=cwd, package=BARMAN_PACKAGE)


# --- the archive: base backups and WAL ----------------------------------------------------------------
def backup_info(text: str, key: str) -> dict[str, Any] | None:
    """A completed base backup's ``backup.info`` (Barman's ``key=value`` lines, stored at
    ``base/<backup id>/backup.info``) with its id and end time; None for one not DONE."""
    info: dict[str, Any] = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    if info.get("status") != "DONE":
        return None
    return info | {"backup_id": key.rsplit("/", 2)[-2], "end": datetime.fromisoformat(info["end_time"])}


def base_backups(state_dir: str | None = None) -> list[dict[str, Any]]:
    """The archive's completed base backups, oldest first: each one's ``backup.info`` as Barman wrote it (its
    times to the microsecond, where barman-cloud-backup-list prints them to the second, without a zone)."""
    wiring = running_stack(state_dir).wiring
    s3, bucket = aws.s3(wiring), wiring.backups_bucket
    prefix = f"{wiring.WAL_ARCHIVE_PREFIX}/{WAL_ARCHIVE_SERVER}/base/"
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", []) if o["Key"].endswith("/backup.info")]  # fmt: skip
    infos = [backup_info(s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode(), key) for key in keys]
    return sorted((i for i in infos if i is not None), key=lambda i: i["end"])


def base_backup(state_dir: str | None = None) -> dict[str, Any]:
    """A base backup of the primary to the archive (barman-cloud-backup, run as the database user: it reads
    the data directory); the start of every point-in-time restore. ``seconds`` is how long it took."""
    stack = running_stack(state_dir)
    layout = stack.layout
    member = probes.patroni_leader(state_dir)
    socket_dir = layout.member_dir(member) / "run"
    options = ("--gzip", "--immediate-checkpoint", "-h", str(socket_dir), "-p", str(layout.ports["postgres"]))
    started = time.monotonic()
    _barman(layout, stack.wiring.barman("barman-cloud-backup", options=(*options, "-U", "postgres")), "base backup",
            layout.db_dir)  # fmt: skip
    newest = base_backups(state_dir)[-1]
    return {"backup_id": newest["backup_id"], "member": member, "seconds": time.monotonic() - started,
            "time": time.time()}  # fmt: skip


def _walfile_at_least(archived: str | None, needed: str) -> bool:
    """Whether the archived segment ``archived`` is ``needed`` or a later one. Segment names are 24 hex digits
    (timeline, log, segment) and sort in WAL order; a history or backup-label file is not a segment."""
    return archived is not None and len(archived) == 24 and archived >= needed


def await_archived(
    target_lsn: str, target_time: float, fault_lsn: str, timeout_s: float = 120, state_dir: str | None = None
) -> dict[str, Any]:
    """Until the archive holds the WAL past the fault: a restore reaches T only by replaying a commit made after
    it. The RPO is how long after T the archive first held T's WAL: a primary lost before then takes T with it."""
    wiring = running_stack(state_dir).wiring
    query = (
        "SELECT last_archived_wal, extract(epoch FROM last_archived_time)::float8,"
        " pg_walfile_name(%s::pg_lsn), pg_walfile_name(%s::pg_lsn) FROM pg_stat_archiver"
    )
    rpo, deadline = None, time.monotonic() + timeout_s
    with connect_superuser(wiring, autocommit=True) as conn:
        while True:
            row = conn.execute(query, (target_lsn, fault_lsn)).fetchone()
            archived, archived_at, t_segment, fault_segment = row  # type: ignore[misc]
            if rpo is None and _walfile_at_least(archived, t_segment):
                rpo = archived_at - target_time
            if _walfile_at_least(archived, fault_segment):
                break
            if time.monotonic() > deadline:
                raise RecoveryError(
                    f"WAL segment {fault_segment} not archived within {timeout_s:g}s (last archived: {archived}):"
                    " see the primary's log for archive_command failures (is the S3 stand-in up?)"
                )
            time.sleep(POLL_S)
    figures = dict(zip(FIGURES["await_archived"], (rpo,), strict=True))
    return {"seconds": rpo, "segment": fault_segment, "figures": figures}


# --- the drill's rows around a recovery target --------------------------------------------------------
def write_known_rows(rows: int = 200, state_dir: str | None = None) -> dict[str, Any]:
    """``rows`` rows committed, the recovery target T noted (the server's clock, as commit times are), then
    ``rows`` more: a recovery to T must bring back exactly the first lot. Each row's payload follows from its
    run and id, so a restore can check the content without a copy of it."""
    wiring = running_stack(state_dir).wiring
    run = secrets.token_hex(4)
    insert = sql.SQL(
        "INSERT INTO {} (run, id, phase, payload) SELECT %(run)s, g, %(phase)s, md5(%(run)s || ':' || g)"
        " FROM generate_series(%(first)s::int, %(last)s::int) g"
    ).format(sql.Identifier(PITR_TABLE))
    with connect_superuser(wiring, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (run text, id int, phase text NOT NULL, payload text NOT NULL,"
                " written_at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (run, id))"
            ).format(sql.Identifier(PITR_TABLE))
        )
        conn.execute(insert, {"run": run, "phase": "before", "first": 1, "last": rows})
        target, lsn = conn.execute("SELECT clock_timestamp(), pg_current_wal_lsn()::text").fetchone()  # type: ignore[misc]
        conn.execute(insert, {"run": run, "phase": "after", "first": rows + 1, "last": 2 * rows})
    return {"run": run, "rows_before": rows, "rows_after": rows, "target_time": target.isoformat(),
            "target_lsn": lsn, "time": target.timestamp()}  # fmt: skip


def known_rows_missing(run: str, rows_before: int, rows_after: int, state_dir: str | None = None) -> dict[str, Any]:
    """How many of the rows ``write_known_rows`` wrote for ``run`` the live database lacks, or holds altered
    (after a rebuild: every one was in the backup it came from)."""
    wiring = running_stack(state_dir).wiring
    count = sql.SQL("SELECT count(*) FROM {} WHERE run = %s AND payload = md5(run || ':' || id)").format(
        sql.Identifier(PITR_TABLE)
    )
    with connect_superuser(wiring) as conn:
        intact = conn.execute(count, (run,)).fetchone()[0]  # type: ignore[index]
    missing = rows_before + rows_after - intact
    return {"figures": dict(zip(FIGURES["known_rows_missing"], (missing,), strict=True))}


def remove_drill_rows(state_dir: str | None = None) -> dict[str, Any]:
    """Drop the drill's table from the live database (a rollback: idempotent)."""
    wiring = running_stack(state_dir).wiring
    with connect_superuser(wiring, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(PITR_TABLE)))
    return {"dropped": PITR_TABLE}


# --- the restore ---------------------------------------------------------------------------------------
def _backup_before(state_dir: str | None, target: datetime) -> dict[str, Any]:
    """The newest base backup that ended before ``target`` (an earlier one cannot replay to a later time)."""
    backups = base_backups(state_dir)
    if not backups:
        raise RecoveryError("no base backup in the archive (it starts empty at every `up`): take one first,"
                            " `pynomaly-ops local backup`")  # fmt: skip
    usable = [b for b in backups if b["end"] < target]
    if not usable:
        raise RecoveryError(
            f"no base backup ended before {target.isoformat()} ({len(backups)} in the archive, all later):"
            " recover to a later time, or take base backups more often"
        )
    return usable[-1]


def _quote(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _configure(data: Path, home: Path, port: int, wiring: Wiring, target_time: str) -> None:
    """Make the restored directory recover to ``target_time`` and promote, as a server of its own: its own port
    and socket, no archiving into the live archive, no standby settings of the member it was copied from."""
    settings = {
        "listen_addresses": wiring.layout.regional,
        "port": port,
        "unix_socket_directories": home / "run",
        "hba_file": data / "pg_hba.conf",
        "ident_file": data / "pg_ident.conf",
        "cluster_name": "pynomaly-pitr",
        "archive_mode": "off",
        "restore_command": wiring.wal_restore_command,
        "recovery_target_time": target_time,
        "recovery_target_timeline": "latest",
        "recovery_target_action": "promote",
        # not readable until promoted; then the primary's connection and worker limits need not be matched
        "hot_standby": "off",
        "synchronous_standby_names": "",
        "primary_conninfo": "",
        "primary_slot_name": "",
        "shared_buffers": "128MB",
        "logging_collector": "off",
    }
    # postgresql.auto.conf is read last: these win over the member's own postgresql.conf, which stays as it was
    with (data / "postgresql.auto.conf").open("a") as auto:
        auto.write("\n# pynomaly-ops point-in-time restore\n")
        auto.writelines(f"{key} = {_quote(value)}\n" for key, value in settings.items())
    (data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
    (data / "recovery.signal").touch()
    (data / "standby.signal").unlink(missing_ok=True)


def _restored_conninfo(home: Path, port: int) -> str:
    return f"host={home / 'run'} port={port} dbname={APP_DB} user=postgres connect_timeout=2"


def _log_tail(home: Path) -> str:
    """What the restored server said last that matters: its FATAL and PANIC lines, else its last lines."""
    log = home / "postgres.log"
    lines = log.read_text(errors="replace").splitlines() if log.exists() else ["(no log)"]
    polled = ("not accepting connections", "is starting up")  # our own connection attempts, refused
    fatal = [line for line in lines if ("FATAL:" in line or "PANIC:" in line) and not any(p in line for p in polled)]
    said = " / ".join(fatal[-2:] or lines[-3:])
    if "recovery ended before configured recovery target" in said:
        said += " (the archive holds no WAL past the target yet: wait for it, as await_archived does)"
    return said


def _await_promoted(home: Path, port: int, timeout_s: float) -> None:
    """Until the restored server has replayed to its target and promoted: with hot_standby off it refuses
    connections until then (pg_ctl's wait ends as soon as recovery starts)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(psycopg.OperationalError), psycopg.connect(_restored_conninfo(home, port)) as conn:
            if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:  # type: ignore[index]
                return
        if not (home / "data" / "postmaster.pid").exists():
            raise RecoveryError(f"the restored server stopped before it was readable: {_log_tail(home)}")
        if time.monotonic() > deadline:
            raise RecoveryError(f"the restored server not readable within {timeout_s:g}s: {_log_tail(home)}")
        time.sleep(POLL_S)


def _end(layout: Layout, home: Path) -> None:
    """Stop the restored server and anything running in its directory, then remove the directory."""
    data = home / "data"
    if (data / "postmaster.pid").exists():
        with contextlib.suppress(RecoveryError):
            pg_ctl = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "-t", "30", "stop"]
            run_tool(pg_ctl, _env(home), "stopping the restored server", user=layout.db_user, cwd=layout.db_dir)
    for pid in pids_under(home):  # a WAL fetch the server started, or a postmaster pg_ctl could not stop
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def restored_server(layout: Layout, wiring: Wiring, backup_id: str, target_time: str) -> Iterator[str]:
    """A server restored from ``backup_id`` and recovered to ``target_time``, in a new directory under the
    database directory and on the ``pitr_restore`` port; yields its conninfo. Stopped and removed on the way
    out, whatever happened."""
    port = layout.ports["pitr_restore"]
    if not health.port_free(layout.regional, port):
        raise RecoveryError(
            f"{layout.regional}:{port}, the restore's port, is taken by {holder(layout.regional, port)}:"
            " a restore never shares a port; if an interrupted drill left it, remove_restores ends it"
        )
    root = own_dir(layout.db_dir / RESTORES, layout.db_user, 0o755)
    home = root / f"pitr-{secrets.token_hex(4)}"
    try:
        own_dir(home, layout.db_user)
        own_dir(home / "run", layout.db_user)
        data = home / "data"
        _barman(layout, wiring.barman("barman-cloud-restore", backup_id, str(data)), f"restoring {backup_id}", home)
        _configure(data, home, port, wiring, target_time)
        (data / "pg_wal").mkdir(exist_ok=True)  # the base backup leaves out the WAL: replay fetches it
        data.chmod(0o700)  # PostgreSQL refuses a data directory others can read
        for path in data.iterdir():  # what was written here as root must belong to the server's user
            if layout.db_user:
                shutil.chown(path, layout.db_user, layout.db_user)
        # -w: until the server has written its pid file and begun recovery (so a dead one is told from a slow one)
        pg_ctl = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(home / "postgres.log"), "-w", "-t", "60"]
        try:
            run_tool([*pg_ctl, "start"], _env(home), "starting the restored server", user=layout.db_user, cwd=home)
        except RecoveryError as exc:
            raise RecoveryError(f"{exc}; the restored server's log ends: {_log_tail(home)}") from None
        _await_promoted(home, port, COMMAND_TIMEOUT_S)
        yield _restored_conninfo(home, port)
    finally:
        _end(layout, home)


def restore_to_time(target_time: str, run: str, rows_before: int, state_dir: str | None = None) -> dict[str, Any]:
    """001 "Data Corruption" undone to a moment: the newest base backup that ended before ``target_time``, WAL
    replayed from the archive to it, in a new server (never over a member); the drill's rows of ``run`` counted
    there (those written before T must all be back, intact; none written after), and the server removed.
    ``seconds`` is the RTO: from the download to a readable recovered database."""
    stack = running_stack(state_dir)
    started = time.monotonic()
    backup = _backup_before(state_dir, datetime.fromisoformat(target_time))
    count = sql.SQL(
        "SELECT count(*) FILTER (WHERE phase = 'before' AND payload = md5(run || ':' || id)),"
        " count(*) FILTER (WHERE phase = 'after') FROM {} WHERE run = %s"
    ).format(sql.Identifier(PITR_TABLE))
    with restored_server(stack.layout, stack.wiring, backup["backup_id"], target_time) as conninfo:
        seconds = time.monotonic() - started
        with psycopg.connect(conninfo) as conn:
            intact, after = conn.execute(count, (run,)).fetchone()  # type: ignore[misc]
    figures = dict(zip(FIGURES["restore_to_time"], (rows_before - intact, after), strict=True))
    return {"seconds": seconds, "backup_id": backup["backup_id"], "target_time": target_time, "figures": figures}


def remove_restores(state_dir: str | None = None) -> dict[str, Any]:
    """End every restored server and remove its directory (a rollback: an interrupted or killed run leaves
    nothing behind)."""
    layout = running_stack(state_dir).layout
    root = layout.db_dir / RESTORES
    homes = sorted(root.glob("pitr-*")) if root.exists() else []
    for home in homes:
        _end(layout, home)
    return {"removed": [h.name for h in homes]}
