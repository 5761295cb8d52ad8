"""``pynomaly-ops load run``: Locust headless, one process (1 worker) or a master and N worker processes on
this machine, with the locustfile's options; its progress lines relayed, then the report written.

Locust runs in child processes (gevent patches the whole interpreter it runs in; this command's process
stays unpatched). The key goes through the environment, never the command line (``ps`` shows arguments).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from loadtests import report, scaling
from loadtests.shapes import Shape
from loadtests.targets import API_KEY_ENV, Target
from loadtests.verdict import INVALID

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
PROGRESS_PREFIX = "[load]"
REPORTS = Path("reports") / "loads"
START_TIMEOUT_S = 60  # workers connecting, the locustfile importing
STOP_GRACE_S = 60
MAX_WORKERS = 16
Say = Callable[[str], None]


@dataclass(frozen=True)
class RunOptions:
    shape: Shape
    target: Target
    workers: int = 1
    fail_on: str | None = None
    min_throughput_per_s: float | None = None
    watch_scaling: bool = False
    reports: Path = REPORTS
    mix: str = "api"
    max_users: int | None = None
    abort: bool = True
    seed: int | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _locust() -> list[str]:
    found = shutil.which("locust", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "locust"]


def command(o: RunOptions, run_dir: Path, port: int | None = None) -> list[str]:
    """The master's (or the single process's) command line."""
    shape = o.shape
    args = [
        *_locust(),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--only-summary",
        "--host",
        o.target.url,
        "--csv",
        str(run_dir / "locust"),
        "--html",
        str(run_dir / "locust.html"),
        "--loglevel",
        "WARNING",
        "--lt-shape",
        shape.name,
        "--lt-duration",
        f"{shape.duration_s:g}s",
        "--lt-rate",
        f"{shape.normal_rate_per_s:g}",
        "--lt-target",
        o.target.name,
        "--lt-mix",
        o.mix,
        "--lt-workers",
        str(o.workers),
        "--lt-out",
        str(run_dir),
    ]
    if o.fail_on:
        args += ["--lt-fail-on", o.fail_on]
    if o.min_throughput_per_s:
        args += ["--lt-min-throughput", f"{o.min_throughput_per_s:g}"]
    if o.max_users:
        args += ["--lt-max-users", str(o.max_users)]
    if o.seed is not None:
        args += ["--lt-seed", str(o.seed)]
    if not o.abort:
        args.append("--lt-no-abort")
    if o.workers > 1:
        args += ["--master", "--expect-workers", str(o.workers), "--master-bind-host", "127.0.0.1"]
        args += ["--master-bind-port", str(port)]
    return args


def worker_command(port: int) -> list[str]:
    return [*_locust(), "-f", str(LOCUSTFILE), "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]


def _relay(stream: IO[str], log: IO[str], say: Say) -> None:
    for line in stream:
        log.write(line)
        log.flush()
        if line.startswith(PROGRESS_PREFIX):
            say(line[len(PROGRESS_PREFIX) :].strip())


def run_dir_for(o: RunOptions, say: Say, generators: str) -> Path:
    """The run's new directory under ``o.reports``; announces the run."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = (o.reports / f"{stamp}-{o.shape.name}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    say(
        f"{o.shape.name}: {o.shape.description}; {o.shape.duration_s:.0f}s, up to "
        f"{o.shape.peak_rate_per_s():.1f} requests/s at {o.target.describe()}, {generators}"
    )
    return run_dir


def run(o: RunOptions, say: Say) -> tuple[dict[str, Any], Path]:
    """Run the load test; returns the verdict (with the report's paths) and the run's directory."""
    if not 1 <= o.workers <= MAX_WORKERS:
        raise ValueError(f"--workers must be 1 to {MAX_WORKERS}, got {o.workers}")
    run_dir = run_dir_for(o, say, f"{o.workers} worker process(es)")
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    if o.target.api_key:
        env[API_KEY_ENV] = o.target.api_key
    port = free_port() if o.workers > 1 else None
    watcher = scaling.Watcher(o.target) if o.watch_scaling else None
    procs: list[subprocess.Popen[str]] = []
    with (run_dir / "locust.log").open("w") as log:
        master = subprocess.Popen(command(o, run_dir, port), env=env, stdout=log, stderr=subprocess.PIPE, text=True)
        procs.append(master)
        if port is not None:
            for _ in range(o.workers):
                procs.append(subprocess.Popen(worker_command(port), env=env, stdout=log, stderr=log, text=True))
        assert master.stderr is not None
        relay = threading.Thread(target=_relay, args=(master.stderr, log, say), daemon=True)
        relay.start()
        if watcher:
            watcher.start()
        deadline = time.monotonic() + START_TIMEOUT_S + o.shape.duration_s + STOP_GRACE_S
        try:
            while master.poll() is None:
                if time.monotonic() > deadline:
                    say("Locust did not stop in time: stopping it")
                    break
                time.sleep(0.5)
        finally:
            if watcher:
                watcher.stop()
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            relay.join(5)
    return finish(o, run_dir, master.returncode, watcher), run_dir


def finish(o: RunOptions, run_dir: Path, returncode: int | None, watcher: scaling.Watcher | None) -> dict[str, Any]:
    verdict_file = run_dir / "verdict.json"
    if not verdict_file.exists():
        v: dict[str, Any] = {
            "shape": o.shape.name,
            "valid": False,
            "exit_code": INVALID,
            "message": f"INVALID: Locust exited {returncode} without a verdict; see {run_dir / 'locust.log'}",
            "thresholds": [],
            "invalid_reasons": [f"Locust exited {returncode} without a verdict"],
        }
    else:
        v = json.loads(verdict_file.read_text())
    v["target"] = {"kind": o.target.kind, "name": o.target.name, "url": o.target.url}
    if watcher is not None and (run_dir / "recording.json").exists():
        v["scaling"] = watcher.timeline(o.shape, run_dir / "recording.json")
    v["files"] = report.write(run_dir, v, o.shape)
    verdict_file.write_text(json.dumps(v, indent=2, default=str) + "\n")
    return v
