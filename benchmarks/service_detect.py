"""Benchmark: POST /api/v1/detect with a 1,000-point series at a constant rate, one service instance.

By default it starts its own stack (PostgreSQL, Redis, moto and one API instance, as
the integration tests do), warms it up, then sends requests open-loop at ``--rate``
per second for ``--duration`` seconds: a request is sent on schedule whether or not
earlier ones have answered, so a slow server shows up as latency, not as a lower
rate. Every series is distinct, so no answer comes from the cache. ``--url`` and
``--api-key`` benchmark a service that is already running instead.

    .venv/bin/python benchmarks/service_detect.py                 # 50 req/s for 30 s
    .venv/bin/python benchmarks/service_detect.py --rate 80 --duration 20 --json reports/bench.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from servers import MotoServer, PostgresServer, RedisServer, ServiceProcess, free_port, wait_until

from pynomaly_ops.baselines import load


@dataclass
class Result:
    rate_target: float
    duration_s: float
    points: int
    sent: int
    ok: int
    errors: int
    achieved_rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_inference_ms: float
    health_max_ms: float
    target_p95_ms: float

    @property
    def passed(self) -> bool:
        return self.errors == 0 and self.p95_ms < self.target_p95_ms


def bodies(count: int, points: int, seed: int = 7) -> list[bytes]:
    """Distinct series (so no cache hits), serialised up front so the load generator stays light."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        series = rng.normal(100, 5, points)
        series[rng.integers(points)] += 60  # one anomaly per series
        out.append(json.dumps({"series": series.round(4).tolist()}).encode())
    return out


def percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    return sorted_ms[min(len(sorted_ms) - 1, round(q / 100 * (len(sorted_ms) - 1)))]


async def _one(client: httpx.AsyncClient, body: bytes, latencies: list[float], inference: list[float]) -> bool:
    started = time.perf_counter()
    try:
        reply = await client.post("/api/v1/detect", content=body, headers={"Content-Type": "application/json"})
    except httpx.HTTPError:
        return False
    if reply.status_code != 200:
        return False
    latencies.append((time.perf_counter() - started) * 1000)
    inference.append(reply.json()["inference_ms"])
    return True


async def _probe_health(client: httpx.AsyncClient, stop: asyncio.Event, seen: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        with contextlib.suppress(httpx.HTTPError):
            await client.get("/health")
        seen.append((time.perf_counter() - started) * 1000)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def run_load(url: str, api_key: str, rate: float, duration_s: float, points: int, target_p95_ms: float) -> Result:
    payloads = bodies(int(rate * duration_s), points)
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
    headers = {"Authorization": f"Bearer {api_key}"}
    latencies: list[float] = []
    inference: list[float] = []
    health: list[float] = []
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client:
        warm = bodies(int(rate), points, seed=1)  # a second's worth, to fill the pool and the detector processes
        await asyncio.gather(*(_one(client, b, [], []) for b in warm))
        stop = asyncio.Event()
        prober = asyncio.create_task(_probe_health(client, stop, health))
        started = time.perf_counter()
        tasks = []
        for i, body in enumerate(payloads):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # open-loop schedule: the i-th request leaves at i/rate
            tasks.append(asyncio.create_task(_one(client, body, latencies, inference)))
        outcomes = await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        stop.set()
        await prober
    ordered = sorted(latencies)
    return Result(
        rate_target=rate,
        duration_s=round(elapsed, 2),
        points=points,
        sent=len(payloads),
        ok=sum(outcomes),
        errors=len(outcomes) - sum(outcomes),
        achieved_rate=round(sum(outcomes) / elapsed, 2),
        p50_ms=round(percentile(ordered, 50), 1),
        p95_ms=round(percentile(ordered, 95), 1),
        p99_ms=round(percentile(ordered, 99), 1),
        max_ms=round(ordered[-1] if ordered else float("nan"), 1),
        mean_inference_ms=round(statistics.fmean(inference), 1) if inference else float("nan"),
        health_max_ms=round(max(health), 1) if health else float("nan"),
        target_p95_ms=target_p95_ms,
    )


@contextlib.contextmanager
def local_service(extra_env: dict[str, str]) -> Iterator[tuple[str, str]]:
    """PostgreSQL, Redis, moto and one API instance on free loopback ports; torn down afterwards."""
    api_key = secrets.token_urlsafe(32)
    postgres = PostgresServer().init().start().create_app_database()
    redis_server, moto = RedisServer().start(), MotoServer().start()
    api = None
    try:
        aws = moto.provision("bench", visibility_timeout_s=30, max_receive_count=1)
        env = {
            "PYNOMALY_HOST": "127.0.0.1", "PYNOMALY_PORT": str(free_port()), "PYNOMALY_INSTANCE_ID": "bench",
            "PYNOMALY_DB_DSN": postgres.dsn(), "PYNOMALY_REDIS_URL": redis_server.url,
            "PYNOMALY_AWS_ENDPOINT_URL": aws.endpoint_url, "PYNOMALY_QUEUE_URL": aws.queue_url,
            "PYNOMALY_ARTIFACTS_BUCKET": aws.bucket, "PYNOMALY_BOOTSTRAP_API_KEY": api_key,
            **moto.aws_env(), **extra_env,
        }  # fmt: skip
        api = ServiceProcess("service.api", env, Path(tempfile.mkdtemp(prefix="pynomaly-bench-", dir="/tmp"))).start()
        wait_until(lambda: httpx.get(api.base_url + "/ready").status_code == 200, 60, "the service to be ready")
        yield api.base_url, api_key
    finally:
        if api is not None:
            api.stop()
        for server in (moto, redis_server, postgres):
            server.cleanup()


def main() -> int:
    # Issue 3's objective: p95 at or under the runbooks' normal average response time.
    default_target = load().normal.response_time_avg_ms.max
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50, help="requests per second (default 50)")
    parser.add_argument("--duration", type=float, default=30, help="seconds of load (default 30)")
    parser.add_argument("--points", type=int, default=1000, help="points per series (default 1000)")
    parser.add_argument("--target-p95-ms", type=float, default=default_target)
    parser.add_argument("--url", help="benchmark this running service instead of starting one")
    parser.add_argument("--api-key", help="API key for --url")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra service env")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.url and not args.api_key:
        parser.error("--url needs --api-key")
    if not 0 < args.rate * args.duration <= 20_000:
        parser.error("--rate x --duration must be between 1 and 20000 requests")
    extra_env = dict(item.split("=", 1) for item in args.env)

    def load_test(url: str, key: str) -> Result:
        return asyncio.run(run_load(url, key, args.rate, args.duration, args.points, args.target_p95_ms))

    if args.url:
        result = load_test(args.url, args.api_key)
    else:
        with local_service(extra_env) as (url, key):
            result = load_test(url, key)
    print(json.dumps(asdict(result), indent=2))
    print(f"p95 {result.p95_ms} ms vs target {result.target_p95_ms} ms: {'PASS' if result.passed else 'FAIL'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**asdict(result), "passed": result.passed}, indent=2))
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
