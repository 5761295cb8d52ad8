"""Benchmark: how good the service's default flags are, on synthetic series with known anomalies.

Each family is a kind of series the API's users send: Gaussian noise, a noisy sine (one period), a
seasonal signal (hourly, a daily cycle and a trend), weekly traffic (the same with quieter weekends), a
random walk, a level shift, and a short repeating pattern (the kind a 7-step business cycle makes).
Every series is drawn from a seeded RNG, so a run is reproducible, and is scored with the service's own
``detect`` at its default options three times:

- clean: as drawn, where every flag is a false alarm (the flag rate must stay at most 1 %);
- injected: with point outliers of ``--min-sigma`` to ``--max-sigma`` times the family's noise sigma
  (for a random walk, its step's sigma) added at random places, precision and recall against them
  (each at least 0.9 for outliers of 6 sigma or more);
- subtle: with outliers of 3 to 6 sigma instead, recall reported with no target (a detector tuned to
  flag them all would flag clean series too).

    .venv/bin/python benchmarks/detection_quality.py                     # 100 series per family
    .venv/bin/python benchmarks/detection_quality.py --series 300 --json reports/quality.json --plot reports/quality.png
    .venv/bin/python benchmarks/detection_quality.py --method isolation_forest --threshold 0.5  # the old default
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from service.detector import detect
from service.schemas import DetectRequest

TARGET_CLEAN_FLAG_RATE = 0.01
TARGET_PRECISION = TARGET_RECALL = 0.9
WEEKLY_MIN_POINTS = 4 * 7 * 24
Generator = Callable[[np.random.Generator, int], tuple[np.ndarray, float]]


def gaussian(rng: np.random.Generator, n: int) -> tuple[np.ndarray, float]:
    return rng.normal(100, 5, n), 5.0


def sine(rng: np.random.Generator, n: int) -> tuple[np.ndarray, float]:
    t = np.arange(n)
    period = rng.uniform(20, 120)
    return 50 + 20 * np.sin(2 * np.pi * t / period + rng.uniform(0, 6.3)) + rng.normal(0, 2, n), 2.0


def seasonal(rng: np.random.Generator, n: int) -> tuple[np.ndarray, float]:
    """Hourly samples of a daily cycle, with a slow trend."""
    t = np.arange(n)
    return 200 + 60 * np.sin(2 * np.pi * (t / 24 + rng.uniform())) + 0.02 * t + rng.normal(0, 3, n), 3.0


def weekly(rng: np.random.Generator, n: int) -> tuple[np.ndarray, float]:
    """Traffic: the daily cycle, a third quieter at weekends (2 days in 7), a slow trend. At least four
    weeks, or nothing could tell a weekend from an anomaly."""
    n = max(n, WEEKLY_MIN_POINTS)
    t = np.arange(n)
    daily = 60 * np.sin(2 * np.pi * (t / 24 + rng.uniform()))
    weekday = ((t // 24 + rng.integers(7)) % 7) < 5
    return 200 + np.where(weekday, 1.0, 0.6) * daily + 0.02 * t + rng.normal(0, 3, n), 3.0


def random_walk(rng: np.random.Generator, n: int) -> tuple[np.ndarray, float]:
    return 100 + np.cumsum(rng.normal(0, 1, n)), 1.0


def level_shift(rng: np.random.Generator, n: int) -> tuple[np.ndarray, float]:
    x = rng.normal(0, 2, n) + 40
    for at in rng.integers(n // 10, n - n // 10, rng.integers(1, 4)):
        x[at:] += rng.choice([-1, 1]) * rng.uniform(10, 30)
    return x, 2.0


def pattern(rng: np.random.Generator, n: int) -> tuple[np.ndarray, float]:
    cycle = rng.uniform(10, 100, rng.integers(5, 13))  # a 5- to 12-step pattern of arbitrary levels
    return np.resize(cycle, n) + rng.normal(0, 1, n), 1.0


FAMILIES: dict[str, Generator] = {
    "gaussian": gaussian,
    "sine": sine,
    "seasonal": seasonal,
    "weekly": weekly,
    "random walk": random_walk,
    "level shift": level_shift,
    "pattern": pattern,
}


def inject(
    rng: np.random.Generator, x: np.ndarray, sigma: float, count: int, sizes: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Add ``count`` point outliers of ``sizes`` x sigma, either sign, at distinct random points."""
    y, labels = x.copy(), np.zeros(len(x), dtype=bool)
    where = rng.choice(len(x), count, replace=False)
    y[where] += rng.choice([-1, 1], count) * rng.uniform(*sizes, count) * sigma
    labels[where] = True
    return y, labels


@dataclass
class FamilyResult:
    family: str
    series: int
    points: int
    clean_flag_rate: float
    precision: float
    recall: float
    subtle_recall: float  # outliers of 3-6 sigma: reported, no target
    mean_ms: float

    @property
    def passed(self) -> bool:
        return (
            self.clean_flag_rate <= TARGET_CLEAN_FLAG_RATE
            and self.precision >= TARGET_PRECISION
            and self.recall >= TARGET_RECALL
        )


def default_options(method: str | None, threshold: float | None = None) -> dict[str, object]:
    """The options the API resolves for a request that sets nothing (or only these)."""
    chosen = {"method": method, "threshold": threshold}
    request = DetectRequest(series=[0.0], **{k: v for k, v in chosen.items() if v is not None})
    return request.resolved_options(default_trees=5)


def run_family(name: str, args: argparse.Namespace) -> FamilyResult:
    rng = np.random.default_rng([args.seed, list(FAMILIES).index(name)])
    options = default_options(args.method, args.threshold)
    clean_flags = clean_points = tp = fp = fn = subtle_tp = subtle_n = 0
    elapsed = 0.0
    for i in range(args.series):
        n = args.points[i % len(args.points)]
        x, sigma = FAMILIES[name](rng, n)
        n = len(x)
        started = time.perf_counter()
        clean = detect(x.tolist(), options)
        elapsed += time.perf_counter() - started
        clean_flags += clean["n_flagged"]
        clean_points += n
        count = max(1, n // 200)
        y, labels = inject(rng, x, sigma, count, (args.min_sigma, args.max_sigma))
        flags = np.array(detect(y.tolist(), options)["flags"])
        tp += int((flags & labels).sum())
        fp += int((flags & ~labels).sum())
        fn += int((~flags & labels).sum())
        z, subtle = inject(rng, x, sigma, count, (3.0, 6.0))
        subtle_tp += int((np.array(detect(z.tolist(), options)["flags"]) & subtle).sum())
        subtle_n += int(subtle.sum())
    return FamilyResult(
        family=name,
        series=args.series,
        points=clean_points,
        clean_flag_rate=clean_flags / clean_points,
        precision=tp / (tp + fp) if tp + fp else 1.0,
        recall=tp / (tp + fn),
        subtle_recall=subtle_tp / subtle_n,
        mean_ms=elapsed / args.series * 1000,
    )


def plot(path: Path, args: argparse.Namespace) -> None:
    """One injected series per family, its flags and its true outliers: what the figures mean, at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    options = default_options(args.method, args.threshold)
    fig, axes = plt.subplots(len(FAMILIES), 1, figsize=(11, 2.1 * len(FAMILIES)))
    for ax, (name, generator) in zip(axes, FAMILIES.items(), strict=True):
        rng = np.random.default_rng([args.seed, 1000 + list(FAMILIES).index(name)])
        x, sigma = generator(rng, 300)
        y, labels = inject(rng, x, sigma, max(3, len(x) // 200), (args.min_sigma, args.max_sigma))
        result = detect(y.tolist(), options)
        flags = np.array(result["flags"])
        ax.plot(y, lw=0.8, color="0.35")
        ax.scatter(np.flatnonzero(labels), y[labels], s=60, facecolors="none", edgecolors="tab:blue", label="injected")
        ax.scatter(np.flatnonzero(flags), y[flags], s=14, color="tab:red", label="flagged")
        ax.set_title(f"{name}: {result['model']}, {result['n_flagged']} flagged", fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def table(results: list[FamilyResult], args: argparse.Namespace) -> str:
    sizes = f"{args.min_sigma:g}-{args.max_sigma:g} sigma"
    head = (
        f"| family | clean flag rate (≤ {TARGET_CLEAN_FLAG_RATE:.0%}) | precision, {sizes} (≥ {TARGET_PRECISION})"
        f" | recall (≥ {TARGET_RECALL}) | recall, 3-6 sigma | ms / series | |\n"
        "| --- | --- | --- | --- | --- | --- | --- |"
    )
    rows = [
        f"| {r.family} | {r.clean_flag_rate:.3%} | {r.precision:.3f} | {r.recall:.3f} | {r.subtle_recall:.3f}"
        f" | {r.mean_ms:.2f} | {'pass' if r.passed else 'FAIL'} |"
        for r in results
    ]
    return "\n".join([head, *rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=100, help="series per family (default 100)")
    parser.add_argument("--points", type=int, nargs="+", default=[300, 1000], help="series lengths, in turn")
    parser.add_argument("--min-sigma", type=float, default=6.0)
    parser.add_argument("--max-sigma", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--method", choices=["residual", "isolation_forest"], help="default: the API's default")
    parser.add_argument("--threshold", type=float, help="a score cut instead of the default (to compare)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--plot", type=Path, help="also draw one injected series per family and its flags (PNG)")
    args = parser.parse_args(argv)
    results = []
    for name in FAMILIES:
        results.append(run_family(name, args))
        print(f"  {name}: done", file=sys.stderr, flush=True)
    print(f"options: {json.dumps(default_options(args.method, args.threshold))}")
    print(table(results, args))
    if args.plot:
        plot(args.plot, args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        payload = {"options": default_options(args.method, args.threshold), "args": settings}
        args.json.write_text(json.dumps(payload | {"families": [asdict(r) for r in results]}, indent=2) + "\n")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
