"""The recorders against the real stack: the function forms Chaos Toolkit background activities call,
and the write recorder's read-back catching rows the database no longer has."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from conftest import RunningStack

from local import probes
from local.recorders import WriteRecorder

pytestmark = pytest.mark.integration

SERIES = {"series": [1.0, 1.1, 0.9, 1.0, 1.05, 25.0]}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_record_requests_through_the_load_balancer(running: RunningStack, tmp_path: Path):
    path = tmp_path / "health.jsonl"
    summary = probes.record_requests("/health", 2, str(path), rate_per_s=20, state_dir=running.state)
    lines = _lines(path)
    print(f"\n/health at 20/s for 2s: p95 {summary['p95_latency_s'] * 1000:.0f} ms")
    assert summary["requests"] == len(lines) == 40
    assert summary["error_rate_percent"] == 0.0 and summary["longest_outage_s"] == 0.0, summary
    assert all(line["status"] == 200 for line in lines)


def test_record_requests_sends_the_api_key_and_the_body(running: RunningStack, tmp_path: Path):
    # Few and patient: an instance's first detection loads the detector (seconds on a busy machine).
    detect = {"method": "POST", "json_body": SERIES, "rate_per_s": 2, "timeout_s": 30, "state_dir": running.state}
    with_key = probes.record_requests("/api/v1/detect", 1.5, str(tmp_path / "a.jsonl"), authorize=True, **detect)
    without = probes.record_requests("/api/v1/detect", 1, str(tmp_path / "b.jsonl"), **detect)
    assert (with_key["requests"], with_key["failed"]) == (3, 0), with_key  # a 422 would mean no body
    assert (without["requests"], without["errors"]) == (2, ["401"]), without


def test_record_writes_reads_back_and_drops_its_table(running: RunningStack, tmp_path: Path):
    path, table = tmp_path / "writes.jsonl", "drill_record_writes_test"
    summary = probes.record_writes(2, str(path), table=table, rate_per_s=100, state_dir=running.state)
    assert summary["lost_writes"] == 0 and summary["errors"] == 0, summary
    assert 150 <= summary["acknowledged"] <= 201 and len(_lines(path)) == summary["attempts"]
    with psycopg.connect(running.outputs.db_writer_dsn) as conn:
        assert conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is None


def test_lost_writes_names_acknowledged_rows_the_database_does_not_have(running: RunningStack):
    dsn, table = running.outputs.db_writer_dsn, "drill_lost_writes_test"
    with WriteRecorder(dsn, table=table, rate_per_s=100) as writer:
        writer.wait_for_acknowledged(20, 10)
    assert writer.lost_writes() == []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DELETE FROM {table} WHERE id IN (3, 7)")
    assert writer.lost_writes() == [3, 7]
    writer.drop_table()
