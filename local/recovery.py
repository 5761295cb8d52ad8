"""Recover the local stack's data: the runbooks' backup and recovery procedures as plain functions (000 Backup &
Recovery, 001 Backup and Recovery and Data Corruption, 004 Database Backup Verification).

Like the fault library (local/faults.py): typed, JSON-friendly arguments, ``state_dir`` last, a dict back
saying what was done and how long it took. None of them overwrites live data: a database is restored under a
new name, an object to a new current version with the old ones kept; what a procedure makes for itself
(scratch databases, downloaded dumps) is removed when it ends, whether it succeeded or not, and
``drop_scratch_databases`` / ``remove_drill_objects`` remove whatever an interrupted run left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from local import aws
from local.programs import PG_BIN
from local.stack import running_stack
from local.wiring import APP_DB, Wiring
from pynomaly_ops import object_versions

LOGICAL_PREFIX = "postgres/logical/"
SCRATCH_PREFIX = "pynomaly_verify_"  # every scratch database's name starts so: the clean-up finds them all
DRILL_OBJECTS = object_versions.DRILL_OBJECTS  # the object-restore drill's own objects in the artifacts bucket
COMMAND_TIMEOUT_S = 600
# The figures each procedure counts (a drill's objectives read them; tests/drills check they exist).
FIGURES = {
    "verify_backup": ("tables compared", "tables differing", "rows missing or extra", "backup age (s)"),
    **object_versions.FIGURES,
}


class RecoveryError(RuntimeError):
    """A backup or restore failed, or its verification found a difference; the message says which."""


# --- the database: a logical backup, and its verification by a restore ------------------------------------
def _admin(wiring: Wiring, dbname: str = APP_DB) -> tuple[str, dict[str, str]]:
    """A superuser conninfo for the writer without its password, and the environment that carries it."""
    password = wiring.layout.secrets["postgres_password"]
    dsn = wiring.writer_dsn("postgres", password, dbname, with_password=False)
    return dsn, os.environ | {"PGPASSWORD": password}


def connect_superuser(wiring: Wiring, dbname: str = APP_DB, autocommit: bool = False) -> psycopg.Connection:
    """A superuser connection to ``dbname`` on the primary."""
    dsn = wiring.writer_dsn("postgres", wiring.layout.secrets["postgres_password"], dbname)
    return psycopg.connect(dsn, autocommit=autocommit)


def _manifest(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    """What ``logical_backup`` recorded beside the dump ``key``."""
    return json.loads(s3.get_object(Bucket=bucket, Key=f"{key}.manifest.json")["Body"].read())


def run_tool(
    args: list[str],
    env: dict[str, str],
    what: str,
    user: str | None = None,
    cwd: Path | None = None,
    package: str = "postgresql-client-15",
) -> str:
    """Run a tool (as ``user``, the database user, when it must own what it writes); its output, or an error
    that ends with the tool's own message."""
    try:
        done = subprocess.run(
            args, env=env, user=user, cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
        )
    except FileNotFoundError:
        raise RecoveryError(f"{args[0]} not found: apt-get install {package}") from None
    if done.returncode != 0:
        tool = Path(args[0]).name
        raise RecoveryError(f"{what} failed ({tool} exit {done.returncode}): {done.stderr.strip()[-800:]}")
    return done.stdout


def table_fingerprints(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    """Row count and a checksum of every table in ``public``: the md5 of its rows' md5s in sorted order, so
    neither physical order nor a primary key matters."""
    tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
    out = {}
    for table in tables:
        query = sql.SQL(
            "SELECT count(*), md5(coalesce(string_agg(h, '' ORDER BY h), ''))"
            " FROM (SELECT md5(t::text) AS h FROM {} t) s"
        ).format(sql.Identifier(table))
        count, checksum = conn.execute(query).fetchone() or (0, "")
        out[table] = {"rows": count, "md5": checksum}
    return out


def logical_backup(state_dir: str | None = None) -> dict[str, Any]:
    """pg_dump (custom format) of the application database to the backups bucket, with a manifest of every
    table's row count and checksum taken in the same snapshot as the dump (what a restore must reproduce)."""
    wiring = running_stack(state_dir).wiring
    started, at = time.monotonic(), time.time()
    stamp = datetime.fromtimestamp(at, UTC).strftime("%Y%m%dT%H%M%S%fZ")
    key = f"{LOGICAL_PREFIX}{stamp}.dump"
    dsn, env = _admin(wiring)
    # autocommit: the BEGIN below is the transaction's first statement, so its isolation level holds
    with (
        connect_superuser(wiring, autocommit=True) as conn,
        tempfile.TemporaryDirectory(prefix="pynomaly-backup-") as tmp,
    ):
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
        tables = table_fingerprints(conn)
        dump = Path(tmp) / "backup.dump"
        # --snapshot: the dump sees exactly what the manifest was computed on, while writes go on
        run_tool([str(PG_BIN / "pg_dump"), "-Fc", f"--snapshot={snapshot}", "-f", str(dump), "-d", dsn], env, "pg_dump")
        conn.execute("ROLLBACK")
        body = dump.read_bytes()
    digest = hashlib.sha256(body).hexdigest()
    manifest = {"key": key, "taken_at": at, "sha256": digest, "bytes": len(body), "tables": tables}
    s3 = aws.s3(wiring)
    s3.put_object(Bucket=wiring.backups_bucket, Key=key, Body=body)
    s3.put_object(Bucket=wiring.backups_bucket, Key=f"{key}.manifest.json", Body=json.dumps(manifest).encode())
    return {"key": key, "bytes": len(body), "tables": len(tables), "seconds": time.monotonic() - started, "time": at}


def latest_backup(state_dir: str | None = None) -> dict[str, Any]:
    """The newest logical backup in the backups bucket and its age; raises when there is none."""
    wiring = running_stack(state_dir).wiring
    s3 = aws.s3(wiring)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=wiring.backups_bucket, Prefix=LOGICAL_PREFIX)
    dumps = [o for page in pages for o in page.get("Contents", []) if o["Key"].endswith(".dump")]
    if not dumps:
        raise RecoveryError(f"no logical backup in s3://{wiring.backups_bucket}/{LOGICAL_PREFIX}: take one first")
    newest = max(dumps, key=lambda o: o["Key"])  # keys are UTC timestamps
    manifest = _manifest(s3, wiring.backups_bucket, newest["Key"])
    return {"key": newest["Key"], "age_s": time.time() - manifest["taken_at"], "bytes": newest["Size"]}


@contextlib.contextmanager
def scratch_database(wiring: Wiring) -> Iterator[str]:
    """A new, empty database on the writer, dropped on the way out whatever happened."""
    name = f"{SCRATCH_PREFIX}{secrets.token_hex(4)}"
    with connect_superuser(wiring, "postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        _drop(wiring, [name])


def _drop(wiring: Wiring, names: list[str]) -> None:
    with connect_superuser(wiring, "postgres", autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def drop_scratch_databases(state_dir: str | None = None) -> dict[str, Any]:
    """Drop every scratch database a verification made (a rollback: an interrupted run leaves none behind)."""
    wiring = running_stack(state_dir).wiring
    with connect_superuser(wiring, "postgres", autocommit=True) as conn:
        pattern = SCRATCH_PREFIX.replace("_", r"\_") + "%"
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (pattern,))]
    _drop(wiring, names)
    return {"dropped": names}


def verify_backup(key: str | None = None, state_dir: str | None = None) -> dict[str, Any]:
    """004's verification done properly: fetch the backup (the newest by default), check it is the file that
    was written (sha256), restore it into a scratch database, compare every table's row count and checksum
    with the manifest, drop the scratch database. ``seconds`` is the restore's RTO: from the download to a
    readable, verified database."""
    wiring = running_stack(state_dir).wiring
    key = key or latest_backup(state_dir)["key"]
    s3 = aws.s3(wiring)
    started = time.monotonic()
    manifest = _manifest(s3, wiring.backups_bucket, key)
    body = s3.get_object(Bucket=wiring.backups_bucket, Key=key)["Body"].read()
    if hashlib.sha256(body).hexdigest() != manifest["sha256"]:
        raise RecoveryError(
            f"s3://{wiring.backups_bucket}/{key} is corrupt: {len(body)} bytes whose sha256 is not the one recorded"
            f" when it was written ({manifest['bytes']} bytes): restore from an older backup, and find what damaged it"
        )
    with tempfile.TemporaryDirectory(prefix="pynomaly-restore-") as tmp, scratch_database(wiring) as scratch:
        dump = Path(tmp) / "backup.dump"
        dump.write_bytes(body)
        dsn, env = _admin(wiring, scratch)
        restore = [str(PG_BIN / "pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error", "-d", dsn]
        run_tool([*restore, str(dump)], env, f"restoring {key}")
        with connect_superuser(wiring, scratch) as conn:
            restored = table_fingerprints(conn)
        seconds = time.monotonic() - started
    recorded = manifest["tables"]
    differing = sorted(t for t in recorded.keys() | restored.keys() if recorded.get(t) != restored.get(t))
    rows = {t: (recorded.get(t, {}).get("rows", 0), restored.get(t, {}).get("rows", 0)) for t in differing}
    rows_differing = sum(abs(before - after) for before, after in rows.values())
    return {
        "key": key,
        "seconds": seconds,
        "scratch_database": scratch,
        "figures": dict(
            zip(
                FIGURES["verify_backup"],
                (len(recorded), len(differing), rows_differing, time.time() - manifest["taken_at"]),
                strict=True,
            )
        ),
        "differing": differing,
    }


# --- objects: restore from the version history of a versioned bucket (pynomaly_ops/object_versions.py) ------------
def seed_objects(count: int = 20, state_dir: str | None = None) -> dict[str, Any]:
    """Write ``count`` objects of known content to the artifacts bucket, under a prefix of their own (the
    object-restore drill's data: the procedure is the one that restores real results)."""
    wiring = running_stack(state_dir).wiring
    return object_versions.seed(aws.s3(wiring), wiring.artifacts_bucket, count)


def restore_objects(prefix: str, before: float, state_dir: str | None = None) -> dict[str, Any]:
    """001 "Data Corruption" for objects: every key under ``prefix`` back at its newest version older than
    ``before`` (the corruption's time), copied as a new current version. ``seconds`` is the restore's RTO."""
    wiring = running_stack(state_dir).wiring
    return object_versions.restore(aws.s3(wiring), wiring.artifacts_bucket, prefix, before)


def verify_objects(expected: dict[str, str], state_dir: str | None = None) -> dict[str, Any]:
    """Read every object back and compare its sha256 with the good content's."""
    wiring = running_stack(state_dir).wiring
    return object_versions.verify(aws.s3(wiring), wiring.artifacts_bucket, expected)


def remove_drill_objects(state_dir: str | None = None) -> dict[str, Any]:
    """Delete every version and delete marker the object-restore drill wrote (a rollback: idempotent)."""
    wiring = running_stack(state_dir).wiring
    return object_versions.remove(aws.s3(wiring), wiring.artifacts_bucket)
