"""The fault library's pieces that need no stack: waiting, the loopback rule, the recorders' arithmetic and
pacing (against a small HTTP server of the test's own on 127.0.0.1), the faults' arguments."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from local import faults, probes
from local.recorders import (
    MAX_DURATION_S,
    MAX_RATE_PER_S,
    NotLoopbackError,
    RequestRecord,
    RequestRecorder,
    WriteAttempt,
    WriteRecorder,
    ensure_loopback_dsn,
    ensure_loopback_url,
    error_rate_percent,
    is_loopback_host,
    last_failure_at,
    longest_outage_s,
    outage_windows,
    p95_latency_s,
    request_summary,
    write_outage,
)
from local.stack import StackError
from local.waiting import Timeout, wait_for


# --- wait_for ---------------------------------------------------------------------
def test_wait_for_returns_the_first_truthy_value():
    answers = iter([None, 0, "leader"])
    assert wait_for("a value", lambda: next(answers), 5, interval_s=0.01) == "leader"


def test_wait_for_lets_a_failed_assertion_through_at_once():
    calls = []

    def check() -> bool:
        calls.append(1)
        raise AssertionError("redrive policy differs")

    started = time.monotonic()
    with pytest.raises(AssertionError, match="redrive policy differs"):
        wait_for("resources", check, 10, interval_s=0.01)
    assert calls == [1] and time.monotonic() - started < 1


def test_wait_for_names_the_last_errors_type_on_timeout():
    def refused() -> bool:
        raise ConnectionRefusedError("port 15432")

    with pytest.raises(Timeout, match=r"primary not ready after 0\.1s \(last error: ConnectionRefusedError: port 1"):
        wait_for("primary", refused, 0.1, interval_s=0.02)


# --- loopback only ----------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.3.1", "127.9.9.9", "::1", "[::1]", "localhost", "LocalHost"])
def test_loopback_hosts_are_allowed(host):
    assert is_loopback_host(host)


@pytest.mark.parametrize("host", ["10.0.0.1", "128.0.0.1", "0.0.0.0", "::", "example.com", "localhost.example.com"])
def test_other_hosts_are_not_loopback(host):
    assert not is_loopback_host(host)


def test_a_foreign_url_is_refused_before_any_request():
    with pytest.raises(NotLoopbackError, match=r"host '203\.0\.113\.7' is not a loopback address"):
        RequestRecorder("http://203.0.113.7:8080/health")
    with pytest.raises(NotLoopbackError, match="not a loopback address"):
        probes.record_requests("https://example.com/", 1, "/dev/null")
    with pytest.raises(NotLoopbackError, match="not an http"):
        ensure_loopback_url("ftp://127.0.0.1/")
    assert ensure_loopback_url("http://[::1]:18080/health")


def test_a_dsn_with_any_foreign_host_is_refused():
    local = "host=127.0.1.1,127.0.2.1 port=15432,15432 dbname=pynomaly target_session_attrs=read-write"
    assert ensure_loopback_dsn(local) == local
    assert ensure_loopback_dsn("host=/var/run/postgresql dbname=x")
    assert ensure_loopback_dsn("postgresql://u:p@localhost:5432/db")
    with pytest.raises(NotLoopbackError, match=r"host\(s\) db\.example\.com"):
        WriteRecorder("host=127.0.1.1,db.example.com port=5432,5432 dbname=x")
    with pytest.raises(NotLoopbackError, match=r"10\.1\.2\.3"):
        WriteRecorder("host=localhost hostaddr=10.1.2.3 dbname=x")


def test_bounds_are_enforced():
    with pytest.raises(ValueError, match=f"rate_per_s must be above 0 and at most {MAX_RATE_PER_S:g}"):
        RequestRecorder("http://127.0.0.1/", rate_per_s=MAX_RATE_PER_S + 1)
    with pytest.raises(ValueError, match="max_duration_s"):
        RequestRecorder("http://127.0.0.1/", max_duration_s=MAX_DURATION_S + 1)
    with pytest.raises(ValueError, match="rate_per_s"):
        WriteRecorder("host=127.0.0.1 dbname=x", rate_per_s=0)
    with pytest.raises(ValueError, match="table name"):
        WriteRecorder("host=127.0.0.1 dbname=x", table="probe; DROP TABLE jobs")


# --- request summaries on synthetic records ---------------------------------------
def _records(pattern: str, spacing_s: float = 0.05, latency_s: float = 0.01) -> list[RequestRecord]:
    """One request per character, ``spacing_s`` apart: ``.`` a 200, ``x`` a 503, ``e`` a refused connection."""
    out = []
    for i, c in enumerate(pattern):
        status = {".": 200, "x": 503, "e": None}[c]
        error = "ConnectError: refused" if c == "e" else None
        at = i * spacing_s
        out.append(RequestRecord(t=100 + at, at=1_000 + at, status=status, error=error, latency_s=latency_s))
    return out


def test_error_rate_counts_every_non_2xx_and_every_error():
    records = _records("..........xxee.....ex")
    assert error_rate_percent(records) == pytest.approx(100 * 6 / 21)
    assert error_rate_percent([]) == 0.0


def test_outage_windows_run_from_the_first_failure_to_the_next_success():
    records = list(reversed(_records("..........xxee.....ex")))  # order of arrival does not matter
    windows = outage_windows(records)
    assert [w["failures"] for w in windows] == [4, 2]
    # 4 failures from t=100.50 until the success due at t=100.70
    assert windows[0]["seconds"] == pytest.approx(0.20) and windows[0]["start_at"] == pytest.approx(1_000.50)
    # unrecovered at the end: until the last failure's answer (t=101.00 + 0.01)
    assert windows[1]["seconds"] == pytest.approx(0.06)
    assert longest_outage_s(records) == pytest.approx(0.20)
    assert last_failure_at(records) == pytest.approx(1_001.00)


def test_a_clean_run_has_no_outage():
    records = _records("....")
    assert outage_windows(records) == [] and longest_outage_s(records) == 0.0 and last_failure_at(records) is None


def test_p95_is_the_nearest_rank_over_answered_requests():
    records = [RequestRecord(t=i, at=i, status=200, error=None, latency_s=(i + 1) / 1000) for i in range(40)]
    records.append(RequestRecord(t=50, at=50, status=None, error="refused", latency_s=9.0))  # no answer: left out
    assert p95_latency_s(records) == pytest.approx(0.038)  # rank ceil(0.95 * 40) = 38
    assert p95_latency_s([]) is None


def test_the_summary_is_json():
    summary = request_summary(_records("..x.e"))
    assert json.loads(json.dumps(summary)) == summary
    assert (summary["requests"], summary["ok"], summary["failed"]) == (5, 3, 2)
    assert summary["errors"] == ["503", "ConnectError: refused"]


# --- write outage on synthetic attempts -------------------------------------------
def _attempts(pattern: str) -> list[WriteAttempt]:
    return [
        WriteAttempt(i + 1, t=10 + i / 10, at=500 + i / 10, latency_s=0.02, error=None if c == "." else "Operational")
        for i, c in enumerate(pattern)
    ]


def test_write_outage_runs_from_the_first_failed_write_to_the_next_acknowledgement():
    outage = write_outage(_attempts("...xxx..x."))
    # first failure starts at t=10.3; the write after it, started at 10.6, was acknowledged at 10.62
    assert outage["seconds"] == pytest.approx(0.32)
    assert outage["first_failure_at"] == pytest.approx(500.3) and outage["recovered"] is True


def test_write_outage_without_failures_or_without_recovery():
    assert write_outage(_attempts("....")) == {"seconds": None, "first_failure_at": None, "recovered": True}
    unrecovered = write_outage(_attempts("..xx"))
    assert unrecovered["recovered"] is False and unrecovered["seconds"] == pytest.approx(0.12)


# --- the request recorder against a server of our own -----------------------------
class _Handler(BaseHTTPRequestHandler):
    slow_first = threading.Event()  # set: the next request takes 1 s
    seen: list[tuple[str, str, str | None, bytes]] = []

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append((self.command, self.path, self.headers.get("Authorization"), body))
        if self.path == "/slow" and type(self).slow_first.is_set():
            type(self).slow_first.clear()
            time.sleep(1.0)  # the server's behaviour under test, not a wait
        self.send_response(503 if self.path == "/down" else 200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    _Handler.seen = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _recorder_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("request-recorder")]


def test_one_slow_request_does_not_stop_the_clock(server):
    _Handler.slow_first.set()
    with RequestRecorder(f"{server}/slow", rate_per_s=20, max_duration_s=1.5) as recorder:
        recorder.run_for(1.5)
    records = recorder.records
    slow = records[0]
    assert slow.ok and slow.latency_s >= 1.0
    # Requests due while the first one hung were sent on time and answered at once.
    during = [r for r in records if slow.t < r.t < slow.t + 0.9]
    assert len(during) >= 15 and all(r.ok and r.latency_s < 0.5 for r in during), during
    assert len(records) == 30  # 1.5 s at 20/s: the cap stopped it, every request recorded


def test_a_recorder_stops_on_every_exit_path(server):
    for exc in (RuntimeError("drill failed"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), RequestRecorder(f"{server}/ok", rate_per_s=50) as recorder:
            recorder.wait_for_ok(3, 5)
            raise exc
        assert _recorder_threads() == []  # every thread joined: nothing is sent after the block left
        assert recorder.ok_count >= 3


def test_failures_are_recorded_with_their_status(server):
    with RequestRecorder(f"{server}/down", rate_per_s=50, max_duration_s=0.3) as recorder:
        recorder.run_for(0.3)
    summary = recorder.summary()
    assert summary["requests"] >= 10 and summary["error_rate_percent"] == 100.0
    assert summary["errors"] == ["503"] and summary["longest_outage_s"] >= 0.25


def test_record_requests_writes_one_json_line_per_request(server, tmp_path):
    path = tmp_path / "requests.jsonl"
    body = {"series": [1.0, 2.0]}
    headers = {"Authorization": "Bearer k"}
    summary = probes.record_requests(f"{server}/detect", 0.5, str(path), 20, "POST", headers, body)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert summary["requests"] == len(lines) == 10 and summary["error_rate_percent"] == 0.0
    assert {"t", "at", "status", "error", "latency_s", "ok"} <= set(lines[0])
    assert {(method, p, auth, json.dumps(json.loads(sent))) for method, p, auth, sent in _Handler.seen} == {
        ("POST", "/detect", "Bearer k", json.dumps(body))
    }
    assert _recorder_threads() == []


# --- faults' arguments --------------------------------------------------------------
@pytest.mark.parametrize(("given", "expected"), [("SIGKILL", 9), ("kill", 9), ("STOP", 19), (18, 18)])
def test_signals_by_name_or_number(given, expected):
    assert faults.parse_signal(given) == signal.Signals(expected)


def test_an_unknown_signal_is_refused():
    with pytest.raises(ValueError, match="unknown signal 'SIGNOPE'"):
        faults.parse_signal("SIGNOPE")


def test_every_function_acts_on_the_given_state_directory(tmp_path):
    with pytest.raises(StackError, match=f"no local stack in {tmp_path}"):
        faults.kill_process("api-0", state_dir=str(tmp_path))
    with pytest.raises(StackError, match=f"no local stack in {tmp_path}"):
        probes.patroni_leader(str(tmp_path))
