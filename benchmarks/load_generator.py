"""How much of the physical limit the load tests' machinery keeps: against a static endpoint (HAProxy answering
from memory, on loopback), side by side in one run:

1. ``wrk`` (one thread): the physical limit of this machine's loopback and HAProxy;
2. a bare Locust ``FastHttpUser`` locustfile (one process, closed loop, no wait): Locust's own ceiling;
3. this suite's locustfile (``loadtests/locustfile.py``, mix ``health``) with its open-model schedule, 1 ms
   recording and threshold machinery, offered more than the bare rate (:data:`OVER_OFFER` x) with as many
   users: what it achieves is its ceiling, and must be at least 90 % of the bare rate.

    .venv/bin/python benchmarks/load_generator.py [--rounds 6] [--duration 10] [--users 10] [--wait-idle 0.3]

On a shared virtual machine the rates move with the neighbours (CPU steal): the bare and suite runs are
interleaved for ``--rounds`` rounds and judged on the median of each round's ratio, and each run's CPU time
per request (the process's own user + system time, which steal does not inflate, less what the same
locustfile spends in an idle run of the same length) is reported beside it: the suite's share of the bare
rate at equal CPU is ``bare CPU per request / suite CPU per request``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from service_detect import wait_for_idle

REPO = Path(__file__).resolve().parents[1]
LOCUST = str(Path(sys.executable).parent / "locust")
KEEP = 0.90  # the suite keeps at least this share of the bare FastHttpUser rate
# The endpoint on one core, the generator under test on the other: neither is moved about by the scheduler.
PINNED = len(os.sched_getaffinity(0)) > 1
SERVER_CPU, GENERATOR_CPU = (["taskset", "-c", "0"], ["taskset", "-c", "1"]) if PINNED else ([], [])
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


def _cpu_children() -> float:
    """User + system seconds of the waited-for children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _steal_share(before: list[int], after: list[int]) -> float:
    """The share of the machine's time stolen by the hypervisor between two /proc/stat samples."""
    delta = [b - a for a, b in zip(before, after, strict=True)]
    return delta[7] / sum(delta) if sum(delta) else 0.0


def _cpu_line() -> list[int]:
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def _locust(args: list[str], duration: float) -> tuple[subprocess.CompletedProcess[str], float]:
    """One Locust process; returns it and the CPU seconds it used."""
    cpu = _cpu_children()
    done = subprocess.run(
        [*GENERATOR_CPU, LOCUST, *args, "--loglevel", "WARNING"],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=False,
    )
    return done, _cpu_children() - cpu


def _aggregated(path: Path) -> dict[str, str]:
    """The Aggregated row of a Locust ``--csv`` stats file."""
    with path.open() as f:
        return next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")


def run_wrk(url: str, duration: float, connections: int) -> float:
    out = subprocess.run(
        [*GENERATOR_CPU, "wrk", "-t1", f"-c{connections}", f"-d{int(duration)}s", url],
        capture_output=True,
        text=True,
        timeout=duration + 30,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    return float(match.group(1))


def run_bare(url: str, duration: float, users: int, work: Path, idle_cpu_s: float = 0.0) -> dict[str, float]:
    locustfile = work / "bare_locustfile.py"
    locustfile.write_text(BARE_LOCUSTFILE)
    prefix = work / "bare"
    _done, cpu = _locust(
        [
            *("-f", str(locustfile), "--headless", "--only-summary", "--host", url, "-u", str(users)),
            *("-r", str(max(1, users)), "-t", f"{int(duration)}s", "--csv", str(prefix)),
        ],
        duration,
    )
    row = _aggregated(work / "bare_stats.csv")
    requests = float(row["Request Count"])
    per = _per(cpu - idle_cpu_s, requests)
    return {"rate_per_s": float(row["Requests/s"]), "requests": requests, "cpu_s": cpu, "cpu_ms_per_request": per}


def _per(cpu_s: float, requests: float) -> float:
    return 1000 * cpu_s / requests if requests else float("inf")


def run_suite(
    url: str, duration: float, users: int, rate: float, work: Path, idle_cpu_s: float = 0.0
) -> dict[str, float]:
    out = work / "suite"
    prefix = work / "suite"
    done, cpu = _locust(
        [
            *("-f", str(REPO / "loadtests" / "locustfile.py"), "--headless", "--only-summary", "--host", url),
            *("--lt-mix", "health", "--lt-shape", "normal", "--lt-rate", f"{rate:.0f}", "--lt-duration"),
            *(f"{duration:g}", "--lt-max-users", str(users), "--lt-no-abort", "--lt-out", str(out)),
            *("--csv", str(prefix)),
        ],
        duration,
    )
    verdict_file = out / "verdict.json"
    if not verdict_file.exists():
        raise RuntimeError(f"the suite's run left no verdict:\n{done.stderr[-2000:]}")
    v = json.loads(verdict_file.read_text())
    return {
        "asked_per_s": rate,
        "offered_per_s": v["offered_per_s"],
        "rate_per_s": v["achieved_per_s"],
        "achieved_ratio": v["achieved_ratio"],
        "cpu_warning": bool(v["meta"].get("cpu_warning")),
        "p95_ms": v["p95_ms"],
        "cpu_s": cpu,
        "cpu_ms_per_request": _per(cpu - idle_cpu_s, float(_aggregated(work / "suite_stats.csv")["Request Count"])),
    }


def idle_cpu(url: str, duration: float, work: Path) -> tuple[float, float]:
    """The CPU seconds each locustfile spends with (next to) no requests in a run as long as a measured one:
    start-up, imports, the suite's drain and its once-a-second machinery. Subtracted, so the CPU per request
    is the marginal cost of a request."""
    bare = run_bare(url, duration, 0, work)["cpu_s"]
    suite = run_suite(url, duration, 1, 0.5, work)["cpu_s"]
    print(f"  idle runs ({duration:g}s): bare {bare:.2f} s CPU, suite {suite:.2f} s CPU", file=sys.stderr)
    return bare, suite


def one_round(
    url: str, args: argparse.Namespace, work: Path, idle: tuple[float, float], offered: float | None
) -> dict[str, Any]:
    """wrk, then bare and suite back to back (in turn bare first and suite first, so a machine that speeds up
    or slows down during the run favours neither), with the steal the machine suffered meanwhile. The suite
    is offered ``offered`` requests/s (the first round: :data:`OVER_OFFER` x its bare rate)."""
    stat = _cpu_line()
    wrk = run_wrk(f"{url}/health", args.duration, args.users)
    if offered is None:
        bare = run_bare(url, args.duration, args.users, work, idle[0])
        suite = run_suite(url, args.duration, args.users, OVER_OFFER * bare["rate_per_s"], work, idle[1])
    else:
        suite = run_suite(url, args.duration, args.users, offered, work, idle[1])
        bare = run_bare(url, args.duration, args.users, work, idle[0])
    steal = _steal_share(stat, _cpu_line())
    row: dict[str, Any] = {
        "wrk_per_s": wrk,
        "bare": bare,
        "suite": suite,
        "rate_share": suite["rate_per_s"] / bare["rate_per_s"] if bare["rate_per_s"] else 0.0,
        "cpu_share": bare["cpu_ms_per_request"] / suite["cpu_ms_per_request"],
        "steal": steal,
    }
    print(
        f"  wrk {wrk:.0f}/s | bare {bare['rate_per_s']:.0f}/s ({bare['cpu_ms_per_request']:.3f} ms CPU/request) | "
        f"suite offered {suite['offered_per_s']:.0f}/s, achieved {suite['rate_per_s']:.0f}/s "
        f"({suite['cpu_ms_per_request']:.3f} ms CPU/request) | share {100 * row['rate_share']:.1f} % by rate, "
        f"{100 * row['cpu_share']:.1f} % by CPU | steal {100 * steal:.0f} %",
        file=sys.stderr,
        flush=True,
    )
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds of the three tools (default 6)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per tool (default 10)")
    parser.add_argument("--users", type=int, default=10, help="Locust users / wrk connections (default 10)")
    parser.add_argument("--wait-idle", type=float, default=None, help="start when at most this many cores are busy")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if not shutil.which("haproxy") or not shutil.which("wrk"):
        print("needs haproxy and wrk (scripts/setup installs them)", file=sys.stderr)
        return 2
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    busy = wait_for_idle(args.wait_idle, 300) if args.wait_idle is not None else None
    with tempfile.TemporaryDirectory(prefix="load-bench-") as tmp:
        work = Path(tmp)
        port = _free_port()
        (work / "haproxy.cfg").write_text(HAPROXY_CFG.format(port=port))
        haproxy = subprocess.Popen(
            [*SERVER_CPU, "haproxy", "-f", str(work / "haproxy.cfg"), "-db"], stderr=subprocess.DEVNULL
        )
        try:
            _wait_port(port)
            url = f"http://127.0.0.1:{port}"
            print(
                f"static endpoint {url} (HAProxy from memory); {args.rounds} rounds of wrk (1 thread), bare "
                f"FastHttpUser and the suite, {args.users} connections/users, {args.duration:g}s each",
                file=sys.stderr,
            )
            idle = idle_cpu(url, args.duration, work)
            rounds: list[dict[str, Any]] = []
            for k in range(args.rounds):
                offered = rounds[0]["suite"]["asked_per_s"] if k % 2 else None
                rounds.append(one_round(url, args, work, idle, offered))
        finally:
            haproxy.terminate()
            haproxy.wait(10)
    kept = statistics.median(r["rate_share"] for r in rounds)
    figures: dict[str, Any] = {
        "rounds": rounds,
        "median": {
            "wrk_per_s": statistics.median(r["wrk_per_s"] for r in rounds),
            "bare_fasthttpuser_per_s": statistics.median(r["bare"]["rate_per_s"] for r in rounds),
            "suite_per_s": statistics.median(r["suite"]["rate_per_s"] for r in rounds),
            "rate_share": kept,
            "cpu_share": statistics.median(r["cpu_share"] for r in rounds),
            "steal": statistics.median(r["steal"] for r in rounds),
        },
        "rate_share_range": [min(r["rate_share"] for r in rounds), max(r["rate_share"] for r in rounds)],
        "idle_cpu_s": {"bare": idle[0], "suite": idle[1]},
        "busy_cores_before": busy,
        "passed": kept >= KEEP,
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    m = figures["median"]
    print(
        f"the suite keeps {100 * kept:.1f} % of the bare rate (median of {args.rounds}; needs {100 * KEEP:g} %), "
        f"{100 * m['cpu_share']:.1f} % at equal CPU; rounds {100 * figures['rate_share_range'][0]:.0f} to "
        f"{100 * figures['rate_share_range'][1]:.0f} %; steal {100 * m['steal']:.0f} %",
        file=sys.stderr,
    )
    return 0 if kept >= KEEP else 1


if __name__ == "__main__":
    raise SystemExit(main())
