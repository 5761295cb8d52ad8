"""Point-in-time recovery against a real local stack: the primary archives its WAL to the local S3, a table's
rows deleted come back by a restore to the moment before, and no restore outlives its run, even a killed one."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from local import faults, pitr, recovery
from local.procs import pids_under
from local.programs import PG_BIN
from local.recovery import RecoveryError
from local.stack import running_stack
from pynomaly_ops.baselines import load

pytestmark = pytest.mark.integration


def _restores(running) -> tuple[list[str], dict[int, str]]:
    """The restore directories that exist, and the processes running in them."""
    root = running_stack(running.state).layout.db_dir / pitr.RESTORES
    return sorted(p.name for p in root.glob("pitr-*")), pids_under(root)


def test_the_primary_archives_its_wal_to_the_backups_bucket(running):
    wiring = running_stack(running.state).wiring
    with recovery.connect_superuser(wiring, autocommit=True) as conn:
        conn.execute("SELECT pg_switch_wal()")  # a segment to archive, without waiting for archive_timeout
        lsn = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
        timeout = conn.execute("SELECT setting::int FROM pg_settings WHERE name = 'archive_timeout'").fetchone()[0]
    archived = pitr.await_archived(lsn, time.time(), lsn, timeout_s=60, state_dir=running.state)
    assert archived["segment"] and archived["seconds"] is not None
    # the server switches segments at half the RPO objective: the other half is the upload's
    assert timeout == load().recovery.point_in_time.rpo_s.local / 2


def test_a_deleted_table_comes_back_by_a_restore_to_the_moment_before(running):
    pitr.base_backup(running.state)
    written = pitr.write_known_rows(50, running.state)
    fault = faults.delete_drill_rows(running.state)
    assert fault["rows_deleted"] == 100  # both lots: the live table is empty now
    archived = pitr.await_archived(written["target_lsn"], written["time"], fault["lsn"], state_dir=running.state)
    assert archived["figures"]["RPO: T's WAL archived after (s)"] > 0
    restored = pitr.restore_to_time(written["target_time"], written["run"], 50, running.state)
    assert restored["figures"] == {"rows written before T missing": 0, "rows written after T present": 0}
    assert _restores(running) == ([], {})
    pitr.remove_drill_rows(running.state)


def test_a_restore_to_before_every_base_backup_is_refused_saying_why(running):
    if not pitr.base_backups(running.state):
        pitr.base_backup(running.state)
    long_ago = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    with pytest.raises(RecoveryError, match="no base backup ended before"):
        pitr.restore_to_time(long_ago, "no-such-run", 1, running.state)


def test_a_restore_never_shares_its_port(running):
    port = running_stack(running.state).layout.ports["pitr_restore"]
    taken = pytest.raises(RecoveryError, match=f"127.0.0.1:{port}, the restore's port, is taken by pid")
    with socket.create_server(("127.0.0.1", port)), taken:
        pitr.restore_to_time(datetime.now(UTC).isoformat(), "no-such-run", 1, running.state)
    assert _restores(running) == ([], {})


def test_a_restore_killed_midway_is_ended_and_removed_by_the_clean_up(running):
    pitr.base_backup(running.state)
    written = pitr.write_known_rows(10, running.state)
    fault = faults.delete_drill_rows(running.state)
    pitr.await_archived(written["target_lsn"], written["time"], fault["lsn"], state_dir=running.state)
    args = json.dumps([written["target_time"], written["run"], 10, running.state])
    code = "import json, sys; from local import pitr; pitr.restore_to_time(*json.loads(sys.argv[1]))"
    child = subprocess.Popen([sys.executable, "-c", code, args])
    try:
        deadline = time.monotonic() + 120
        server = str(PG_BIN / "postgres")
        while not any(line.startswith(server) for line in _restores(running)[1].values()):
            assert child.poll() is None and time.monotonic() < deadline, "the restore never started its server"
            time.sleep(0.2)
        child.send_signal(signal.SIGKILL)  # no finally runs: as a drill runner killed outright
        child.wait(10)
        left, running_there = _restores(running)
        assert left and running_there  # what the killed run left behind
        assert pitr.remove_restores(running.state)["removed"] == left
        assert _restores(running) == ([], {})
    finally:
        child.kill()
        pitr.remove_restores(running.state)
        pitr.remove_drill_rows(running.state)
