"""How much of the physical limit the load tests' machinery keeps: against a static endpoint (HAProxy answering
from memory, on loopback), side by side in one run:

1. ``wrk`` (one thread): the physical limit of this machine's loopback and HAProxy;
2. a bare Locust ``FastHttpUser`` locustfile (one process, closed loop, no wait): Locust's own ceiling;
3. this suite's locustfile (``loadtests/locustfile.py``, mix ``health``) with its open-model schedule, 1 ms
   recording and threshold machinery, offered more than the bare rate (:data:`OVER_OFFER` x) with as many
   users: what it achieves is its ceiling, and must be at least 90 % of the bare rate.

    .venv/bin/python benchmarks/load_generator.py [--duration 15] [--users 10] [--wait-idle 0.3] [--json out.json]

Figures are noisy on a shared 2-core machine: run it when the machine is quiet (``--wait-idle``).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from service_detect import wait_for_idle

REPO = Path(__file__).resolve().parents[1]
LOCUST = str(Path(sys.executable).parent / "locust")
KEEP = 0.90  # the suite keeps at least this share of the bare FastHttpUser rate
OVER_OFFER = 1.5  # the suite is offered this multiple of the bare rate: it sends what it can, drops the rest

HAPROXY_CFG = """
global
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend static
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain string ok
"""

BARE_LOCUSTFILE = """
from locust import FastHttpUser, constant, task


class Bare(FastHttpUser):
    wait_time = constant(0)

    @task
    def health(self):
        self.client.get("/health")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def run_wrk(url: str, duration: float, connections: int) -> float:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{int(duration)}s", url],
        capture_output=True,
        text=True,
        timeout=duration + 30,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    return float(match.group(1))


def run_bare(url: str, duration: float, users: int, work: Path) -> dict[str, float]:
    locustfile = work / "bare_locustfile.py"
    locustfile.write_text(BARE_LOCUSTFILE)
    prefix = work / "bare"
    subprocess.run(
        [
            *(LOCUST, "-f", str(locustfile), "--headless", "--only-summary", "--host", url, "-u", str(users)),
            *("-r", str(users), "-t", f"{int(duration)}s", "--csv", str(prefix), "--loglevel", "WARNING"),
        ],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=False,
    )
    with (work / "bare_stats.csv").open() as f:
        row = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    return {"rate_per_s": float(row["Requests/s"]), "requests": float(row["Request Count"])}


def run_suite(url: str, duration: float, users: int, rate: float, work: Path) -> dict[str, float]:
    out = work / "suite"
    done = subprocess.run(
        [
            *(LOCUST, "-f", str(REPO / "loadtests" / "locustfile.py"), "--headless", "--only-summary", "--host", url),
            *("--lt-mix", "health", "--lt-shape", "normal", "--lt-rate", f"{rate:.0f}", "--lt-duration"),
            *(f"{duration:g}", "--lt-max-users", str(users), "--lt-no-abort", "--lt-out", str(out)),
            *("--loglevel", "WARNING"),
        ],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=False,
    )
    verdict_file = out / "verdict.json"
    if not verdict_file.exists():
        raise RuntimeError(f"the suite's run left no verdict:\n{done.stderr[-2000:]}")
    v = json.loads(verdict_file.read_text())
    return {
        "offered_per_s": v["offered_per_s"],
        "rate_per_s": v["achieved_per_s"],
        "achieved_ratio": v["achieved_ratio"],
        "cpu_warning": bool(v["meta"].get("cpu_warning")),
        "p95_ms": v["p95_ms"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15, help="seconds per tool (default 15)")
    parser.add_argument("--users", type=int, default=10, help="Locust users / wrk connections (default 10)")
    parser.add_argument("--wait-idle", type=float, default=None, help="start when at most this many cores are busy")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if not shutil.which("haproxy") or not shutil.which("wrk"):
        print("needs haproxy and wrk (scripts/setup installs them)", file=sys.stderr)
        return 2
    busy = wait_for_idle(args.wait_idle, 300) if args.wait_idle is not None else None
    with tempfile.TemporaryDirectory(prefix="load-bench-") as tmp:
        work = Path(tmp)
        port = _free_port()
        (work / "haproxy.cfg").write_text(HAPROXY_CFG.format(port=port))
        haproxy = subprocess.Popen(["haproxy", "-f", str(work / "haproxy.cfg"), "-db"], stderr=subprocess.DEVNULL)
        try:
            _wait_port(port)
            url = f"http://127.0.0.1:{port}"
            print(f"static endpoint {url} (HAProxy from memory); {args.duration:g}s per tool", file=sys.stderr)
            wrk = run_wrk(f"{url}/health", args.duration, args.users)
            print(f"wrk (1 thread, {args.users} connections): {wrk:.0f} requests/s", file=sys.stderr)
            bare = run_bare(url, args.duration, args.users, work)
            print(f"bare FastHttpUser ({args.users} users): {bare['rate_per_s']:.0f} requests/s", file=sys.stderr)
            suite = run_suite(url, args.duration, args.users, OVER_OFFER * bare["rate_per_s"], work)
            print(
                f"suite locustfile, offered {suite['offered_per_s']:.0f}/s: achieved {suite['rate_per_s']:.0f}/s "
                f"(cpu warning: {suite['cpu_warning']})",
                file=sys.stderr,
            )
        finally:
            haproxy.terminate()
            haproxy.wait(10)
    kept = suite["rate_per_s"] / bare["rate_per_s"] if bare["rate_per_s"] else 0.0
    figures = {
        "wrk_per_s": wrk,
        "bare_fasthttpuser_per_s": bare["rate_per_s"],
        "suite": suite,
        "suite_share_of_bare": kept,
        "busy_cores_before": busy,
        "passed": kept >= KEEP,
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"the suite keeps {100 * kept:.1f} % of the bare rate (needs {100 * KEEP:g} %)", file=sys.stderr)
    return 0 if kept >= KEEP else 1


if __name__ == "__main__":
    raise SystemExit(main())
