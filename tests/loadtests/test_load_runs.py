"""Real load runs, short and bounded, on loopback only: against a local stack of its own (offset 2500), a
run at the normal rate passes with its report and JUnit, through `pynomaly-ops load run` (a master and two
workers) and through plain `locust -f`; with --watch-scaling the capacity change is in the timeline; against
a deliberately slowed endpoint a run fails with exit 3 naming the threshold; and a generator that cannot keep
the offered rate makes the run invalid (exit 4)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.etree import ElementTree as ET

import httpx
import pytest

from loadtests import targets
from loadtests.runner import PROGRESS_PREFIX, free_port
from local import faults
from local.layout import PORT_OFFSET_ENV, STATE_ENV
from pynomaly_ops.baselines import load

pytestmark = pytest.mark.integration
PORT_OFFSET = "2500"  # away from a developer's stack and the other suites' (1000, 1500, 2000)
REPO = Path(__file__).resolve().parents[2]


def _cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pynomaly_cli.cli", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[dict[str, str]]:
    state = str(tmp_path_factory.mktemp("load-stack") / "state")
    env = os.environ | {STATE_ENV: state, PORT_OFFSET_ENV: PORT_OFFSET}
    up = _cli(env, "local", "up")
    try:
        assert up.returncode == 0, up.stderr
        _warm_up(targets.local(state))
        yield env
    finally:
        down = _cli(env, "local", "down", "--purge")
        assert down.returncode == 0, down.stderr


def _warm_up(target: targets.Target, timeout_s: float = 90) -> None:
    """A new instance answers its first detections slowly (it loads its libraries): 30 good answers. On a
    busy CI machine a cold instance can miss its load balancer checks and answer 503 for a moment (the last
    CI run met one): a 503 is retried until the deadline; anything else, or a 503 that outlives it, fails."""
    headers = {"Authorization": f"Bearer {target.api_key}"}
    deadline, good, i = time.monotonic() + timeout_s, 0, 0
    with httpx.Client(timeout=30) as client:
        while good < 30:
            i += 1
            body = {"series": [float((i * 7 + j) % 13) for j in range(500)]}
            answer = client.post(f"{target.url}/api/v1/detect", json=body, headers=headers)
            if answer.status_code == 503 and time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            assert answer.status_code == 200, f"warm-up detection {i}: {answer.status_code} {answer.text[:300]}"
            good += 1


def _verdict(reports: Path) -> tuple[Path, dict]:
    (run_dir,) = list(reports.iterdir())
    return run_dir, json.loads((run_dir / "verdict.json").read_text())


def test_a_normal_run_on_two_workers_passes_with_its_report_and_junit(stack, tmp_path):
    reports = tmp_path / "reports"
    args = ["--shape", "normal", "--duration", "20", "--workers", "2", "--reports", str(reports)]
    done = _cli(stack, "load", "run", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir, v = _verdict(reports)
    assert v["exit_code"] == 0 and v["valid"] and v["meta"]["workers"] == 2
    rate = load().load.normal_rate("local")
    assert v["offered_per_s"] == pytest.approx(rate, rel=0.1) and v["achieved_ratio"] >= 0.95
    assert v["expected_4xx"] > 0 and v["failures"] == 0
    files = {p.name for p in run_dir.iterdir()}
    assert {"locust.html", "locust_stats.csv", "junit.xml", "timeline.png", "report.md", "recording.json"} <= files
    assert (run_dir / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    suite = ET.parse(run_dir / "junit.xml").getroot()
    assert suite.get("failures") == "0" and int(suite.get("tests") or 0) > 10
    assert "POST /api/v1/detect" in (run_dir / "locust_stats.csv").read_text()
    assert f"{PROGRESS_PREFIX}" not in done.stdout and "achieved" in done.stderr  # the progress lines


def test_plain_locust_runs_the_locustfile_against_the_local_stack(stack, tmp_path):
    cmd = [
        str(Path(sys.executable).parent / "locust"),
        "-f",
        str(REPO / "loadtests" / "locustfile.py"),
        "--headless",
        "--only-summary",
        "--lt-duration",
        "12",
        "--lt-out",
        str(tmp_path),
    ]
    done = subprocess.run(cmd, env=stack, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    v = json.loads((tmp_path / "verdict.json").read_text())
    assert v["message"] == "PASS" and v["requests"] > 50
    assert f"{PROGRESS_PREFIX} PASS" in done.stderr


def test_watch_scaling_reports_the_load_step_and_the_new_capacity(stack, tmp_path):
    state = stack[STATE_ENV]
    reports = tmp_path / "reports"
    b = load()

    def scale_out() -> None:
        time.sleep(14)  # the spike starts at a quarter of the run after the ramp
        faults.scale_instances(b.scaling.instances_normal + 1, state)

    thread = threading.Thread(target=scale_out)
    thread.start()
    try:
        args = ["load", "run", "--shape", "spike", "--duration", "36", "--watch-scaling", "--reports", str(reports)]
        done = _cli(stack, *args)
    finally:
        thread.join()
        faults.scale_instances(b.scaling.instances_normal, state)
    assert done.returncode in (0, 3), done.stdout + done.stderr
    _, v = _verdict(reports)
    events = [e["event"] for e in v["scaling"]["events"]]
    assert "load step" in events and "capacity change" in events and "new capacity serving" in events
    assert events.index("capacity change") < events.index("new capacity serving")
    assert "scaling" in done.stdout


@pytest.fixture
def web_master(stack, tmp_path) -> Iterator[str]:
    """A Locust master left running in web mode with two workers, as the EKS load generators run it."""
    locust, file = str(Path(sys.executable).parent / "locust"), str(REPO / "loadtests" / "locustfile.py")
    bus, web = free_port(), free_port()
    env = stack | {targets.API_KEY_ENV: targets.local(stack[STATE_ENV]).api_key or ""}
    master = [locust, "-f", file, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(bus)]
    master += ["--web-host", "127.0.0.1", "--web-port", str(web)]
    worker = [locust, "-f", file, "--worker", "--master-host", "127.0.0.1", "--master-port", str(bus)]
    log = (tmp_path / "locust-web.log").open("w")
    procs = [subprocess.Popen(cmd, env=env, stdout=log, stderr=log) for cmd in (master, worker, worker)]
    try:
        yield f"http://127.0.0.1:{web}"
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(15)
        log.close()
        print((tmp_path / "locust-web.log").read_text()[-3000:])  # shown when the test fails


def test_remote_runs_on_a_master_left_running_each_judged_and_reported_here(stack, web_master, slow_url, tmp_path):
    """Two runs, one after the other, on the same master: each gets its own options, host and verdict."""
    first, second = tmp_path / "first", tmp_path / "second"
    args = ["load", "run", "--master-url", web_master, "--workers", "2"]
    done = _cli(stack, *args, "--shape", "normal", "--duration", "14", "--reports", str(first))
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir, v = _verdict(first)
    assert v["exit_code"] == 0 and v["meta"]["workers"] == 2 and v["requests"] > 50 and v["failures"] == 0
    assert {"locust.html", "locust_stats.csv", "junit.xml", "timeline.png", "recording.json"} <= {
        p.name for p in run_dir.iterdir()
    }
    assert "POST /api/v1/detect" in (run_dir / "locust_stats.csv").read_text()
    assert "achieved" in done.stderr  # the master's progress, relayed
    slow = ["--url", slow_url, "--mix", "health", "--rate", "5", "--shape", "peak", "--duration", "14"]
    done = _cli(stack, *args, *slow, "--reports", str(second))
    assert done.returncode == 3, done.stdout + done.stderr
    _, v = _verdict(second)
    assert v["meta"]["host"] == slow_url and v["exit_code"] == 3
    assert "/api/v1/detect" not in json.dumps(v["thresholds"])  # the second run's own mix: health only


class _Slow(BaseHTTPRequestHandler):
    delay_s = 0.6

    def do_GET(self) -> None:
        time.sleep(self.delay_s)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def slow_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _slow_run(url: str, reports: Path, *extra: str) -> subprocess.CompletedProcess:
    args = ["--url", url, "--mix", "health", "--rate", "5", "--duration", "14", "--reports", str(reports), *extra]
    return _cli(dict(os.environ), "load", "run", "--shape", "peak", *args, timeout=120)


def test_a_slowed_endpoint_fails_with_exit_3_and_the_message_names_the_threshold(slow_url, tmp_path):
    done = _slow_run(slow_url, tmp_path)
    assert done.returncode == 3, done.stdout + done.stderr
    _, v = _verdict(tmp_path)
    assert v["valid"] and v["exit_code"] == 3
    text = " ".join(done.stdout.split())
    assert "all p95_ms: measured 6" in text and "limit 500 (warning, thresholds.response_time_p95_ms.warning)" in text
    assert "limit 1000" not in v["message"]  # 600 ms is under the critical level


def test_a_generator_that_cannot_keep_the_offered_rate_makes_the_run_invalid(slow_url, tmp_path):
    done = _slow_run(slow_url, tmp_path, "--max-users", "2")  # 2 users x 1/0.6 s < 15/s offered
    assert done.returncode == 4, done.stdout + done.stderr
    _, v = _verdict(tmp_path)
    assert not v["valid"] and v["dropped"] > 0
    assert "INVALID" in done.stdout and "of the offered" in " ".join(done.stdout.split())
