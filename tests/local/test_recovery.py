"""The recovery procedures against a real local stack: a backup restores to the same data, and a damaged one is
refused; objects come back from their history; nothing a procedure makes outlives it."""

from __future__ import annotations

import hashlib
import json

import psycopg
import pytest
from conftest import aws

from local import faults, recovery
from local.stack import running_stack

pytestmark = pytest.mark.integration


def _scratch_databases(state: str) -> list[str]:
    wiring = running_stack(state).wiring
    with recovery.connect_superuser(wiring, "postgres") as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'pynomaly_verify%'")]


def _app_rows(state: str, sql: str) -> None:
    with psycopg.connect(running_stack(state).wiring.db_dsn(), autocommit=True) as conn:
        conn.execute(sql)


def test_a_backup_restores_to_exactly_its_manifest_and_leaves_no_scratch_database(running):
    _app_rows(running.state, "CREATE TABLE IF NOT EXISTS recovery_probe (id int PRIMARY KEY, v text)")
    _app_rows(running.state, "INSERT INTO recovery_probe SELECT g, md5(g::text) FROM generate_series(1, 500) g")
    taken = recovery.logical_backup(running.state)
    latest = recovery.latest_backup(running.state)
    assert latest["key"] == taken["key"] and 0 <= latest["age_s"] < 60
    _app_rows(running.state, "DELETE FROM recovery_probe")  # the live data moves on; the backup does not
    verified = recovery.verify_backup(state_dir=running.state)
    figures = verified["figures"]
    assert figures["tables differing"] == 0 and figures["rows missing or extra"] == 0, verified["differing"]
    assert figures["tables compared"] >= 2  # the service's tables and the probe's
    assert verified["scratch_database"] not in _scratch_databases(running.state)


def test_a_restore_that_differs_from_the_manifest_is_counted(running):
    _app_rows(running.state, "CREATE TABLE IF NOT EXISTS recovery_probe (id int PRIMARY KEY, v text)")
    key = recovery.logical_backup(running.state)["key"]
    wiring, s3 = running_stack(running.state).wiring, aws(running, "s3")
    manifest_key = f"{key}.manifest.json"
    manifest = json.loads(s3.get_object(Bucket=wiring.backups_bucket, Key=manifest_key)["Body"].read())
    manifest["tables"]["recovery_probe"]["rows"] += 3  # as if the dump had lost three rows
    s3.put_object(Bucket=wiring.backups_bucket, Key=manifest_key, Body=json.dumps(manifest).encode())
    figures = recovery.verify_backup(key, running.state)["figures"]
    assert figures["tables differing"] == 1 and figures["rows missing or extra"] == 3


def test_a_truncated_dump_fails_verification_saying_so(running):
    key = recovery.logical_backup(running.state)["key"]
    wiring, s3 = running_stack(running.state).wiring, aws(running, "s3")
    body = s3.get_object(Bucket=wiring.backups_bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=wiring.backups_bucket, Key=key, Body=body[: len(body) // 2])
    with pytest.raises(recovery.RecoveryError, match=r"is corrupt: .* restore from an older backup"):
        recovery.verify_backup(key, running.state)
    assert _scratch_databases(running.state) == []


def test_a_restore_that_fails_midway_drops_its_scratch_database(running):
    key = recovery.logical_backup(running.state)["key"]
    wiring, s3 = running_stack(running.state).wiring, aws(running, "s3")
    garbage = b"PGDMP not really a dump"
    manifest = json.loads(s3.get_object(Bucket=wiring.backups_bucket, Key=f"{key}.manifest.json")["Body"].read())
    manifest["sha256"] = hashlib.sha256(garbage).hexdigest()  # intact as recorded, yet unusable
    s3.put_object(Bucket=wiring.backups_bucket, Key=key, Body=garbage)
    s3.put_object(Bucket=wiring.backups_bucket, Key=f"{key}.manifest.json", Body=json.dumps(manifest).encode())
    with pytest.raises(recovery.RecoveryError, match="pg_restore exit"):
        recovery.verify_backup(key, running.state)
    assert _scratch_databases(running.state) == []


def test_the_clean_up_drops_a_scratch_database_an_interrupted_run_left(running):
    wiring = running_stack(running.state).wiring
    left = recovery.scratch_database(wiring)
    name = left.__enter__()  # and never left: as a run killed mid-restore
    assert name in _scratch_databases(running.state)
    assert name in recovery.drop_scratch_databases(running.state)["dropped"]
    assert _scratch_databases(running.state) == []


def test_objects_deleted_and_overwritten_come_back_from_their_history(running):
    seeded = recovery.seed_objects(6, running.state)
    fault = faults.corrupt_objects(seeded["prefix"], running.state)
    assert (fault["deleted"], fault["overwritten"]) == (3, 3)
    broken = recovery.verify_objects(seeded["expected"], running.state)["figures"]
    assert broken["objects differing from their last good version"] == 6
    restored = recovery.restore_objects(seeded["prefix"], fault["time"], running.state)
    assert restored["figures"] == {"objects restored": 6, "objects without a good version": 0}
    verified = recovery.verify_objects(seeded["expected"], running.state)["figures"]
    assert verified["objects differing from their last good version"] == 0
    again = recovery.restore_objects(seeded["prefix"], fault["time"], running.state)  # idempotent
    assert again["figures"]["objects restored"] == 0
    assert recovery.remove_drill_objects(running.state)["versions_removed"] >= 6 + 6 + 6
    bucket = running_stack(running.state).wiring.artifacts_bucket
    left = aws(running, "s3").list_object_versions(Bucket=bucket, Prefix=recovery.DRILL_OBJECTS)
    assert not left.get("Versions") and not left.get("DeleteMarkers")
