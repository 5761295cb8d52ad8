"""The detector: scores every point and flags the anomalous ones, in a pool of processes.

Two methods (``method`` in a request; ``auto`` picks by the input's shape):

- ``residual``, the default for a ``series``: each point's departure from its local or seasonal
  pattern in robust standard deviations (:mod:`service.residual`); flagged above 5 by default.
- ``isolation_forest``, the default for ``rows``: scikit-learn's IsolationForest, fitted per request
  with a fixed random_state (the same input always gives the same scores). Scores are the Liu et al.
  anomaly score: about 0.5 for an ordinary point, near 1 for one isolated at once; flagged above
  0.7 by default (``DEFAULT_THRESHOLDS``). (scikit-learn's own ``contamination="auto"`` cuts at 0.5, which a
  third to a half of the points of a short or repetitive series reach.)

Either way ``contamination`` (a share) flags that share of the highest scores instead, and
``threshold`` sets the cut. The reply carries the method, the cut used and, for ``residual``, which
baseline explained the series.

Fitting a forest is CPU-bound and largely pure Python inside scikit-learn, so the API runs detection
in a small pool of processes: it neither blocks the event loop nor holds the API process's GIL (health
checks stay responsive, and both cores are used). The pool's processes ignore SIGINT/SIGTERM so a
graceful shutdown of the API can let in-flight detections finish.

Cost: the residual method is numpy, 3 to 9 ms for 1,000 points (5.5 ms on average in the service's
benchmark). scikit-learn spends about 1.3 ms of Python per tree whatever the data size, so the default
forest is small (``PYNOMALY_DETECTOR_TREES``, 5); a request may ask for up to 200 trees.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from service import metrics
from service.errors import ApiError

log = logging.getLogger(__name__)
RANDOM_STATE = 42
MAX_SAMPLES = 256  # the IsolationForest paper's sub-sample size; more adds cost, not accuracy
RESIDUAL = "residual"
FOREST = "isolation_forest"
# The score a point must pass to be flagged when a request sets no cut (the README's detection figures):
# residual, robust sigmas (Gaussian noise passes 4 once in 16,000 points); forest, the Liu et al. score
# (isolated in about half the average path length).
DEFAULT_THRESHOLDS = {RESIDUAL: 4.0, FOREST: 0.7}


def resolve_method(method: str, univariate: bool, trees_asked: bool) -> str:
    """``auto``: the forest for rows (it needs no order) or when its tree count is asked for; else the
    residual method."""
    if method == "auto":
        return FOREST if trees_asked or not univariate else RESIDUAL
    return method


def detect(data: list[float] | list[list[float]], options: dict[str, Any]) -> dict[str, Any]:
    """Per-point anomaly scores (higher = more anomalous) and flags, plus the fit+score time."""
    # Imported here, not at the top: only the processes that detect pay for loading numpy and scikit-learn.
    import numpy as np

    started = time.perf_counter()
    x = _unit_scaled(np.asarray(data, dtype=float))
    # A job queued before the method existed has none: it was a forest job, and its options say how many trees.
    method = resolve_method(options.get("method", "auto"), x.ndim == 1, "n_estimators" in options)
    if method == RESIDUAL:
        from service import residual

        fit = residual.score(x)
        scores, model = fit.scores, fit.baseline
    else:
        scores, model = _forest_scores(x, options["n_estimators"]), f"{options['n_estimators']} trees"
    default_cut = DEFAULT_THRESHOLDS[method]
    threshold = _threshold(scores, options.get("contamination", "auto"), options.get("threshold"), default_cut)
    flags = scores > threshold
    return {
        "scores": np.round(scores, 6).tolist(),
        "flags": flags.tolist(),
        "method": method,
        "model": model,
        "threshold": round(float(threshold), 6),
        "n_flagged": int(flags.sum()),
        "inference_ms": (time.perf_counter() - started) * 1000,
    }


def _unit_scaled(x: Any) -> Any:
    """Divided by the largest magnitude (per feature): both methods are scale-free, and values near the
    float limit (1e308 is a valid number) would overflow in the sums the residual baseline takes."""
    import numpy as np

    scale = np.abs(x).max(axis=0, initial=0.0)
    return x / np.where(scale > 0, scale, 1.0)


def _forest_scores(x: Any, trees: int) -> Any:
    from sklearn.ensemble import IsolationForest

    if x.ndim == 1:  # a univariate series: one feature per point
        x = x.reshape(-1, 1)
    model = IsolationForest(
        n_estimators=trees, max_samples=min(MAX_SAMPLES, len(x)), random_state=RANDOM_STATE, n_jobs=1
    ).fit(x)
    return -model.score_samples(x)


def _threshold(scores: Any, contamination: float | str, threshold: float | None, default: float) -> float:
    """The cut: an explicit threshold, else the (1 - contamination) quantile of the scores, else the default."""
    import numpy as np

    if threshold is not None:
        return threshold
    if contamination != "auto":
        return float(np.percentile(scores, 100 * (1 - float(contamination))))
    return default


def _ignore_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class Detector:
    """Runs :func:`detect` inline (``processes=0``) or in a pool of ``processes`` processes.

    Admission is bounded: at most ``QUEUE_PER_PROCESS`` detections per process may be
    running or waiting, and a request that cannot get a slot within ``admit_timeout_s``
    is refused with a 503. Under overload the service then answers "busy, retry" in
    bounded time instead of letting every request's latency grow without limit.
    """

    QUEUE_PER_PROCESS = 4

    def __init__(self, processes: int, admit_timeout_s: float | None = 2.0) -> None:
        self._processes = processes
        self._admit_timeout_s = admit_timeout_s
        self._slots = threading.BoundedSemaphore(max(1, processes) * self.QUEUE_PER_PROCESS)
        self._pool: ProcessPoolExecutor | None = None
        if processes:
            self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: the API process has threads (DB pool, uvicorn) that fork would not copy safely
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(self._processes, mp_context=context, initializer=_ignore_signals)
        forest, series = {"method": FOREST, "n_estimators": 1}, {"method": RESIDUAL}
        for _ in range(self._processes):  # import numpy and scikit-learn in every child before the first request
            futures = [pool.submit(detect, [[0.0], [1.0]], forest), pool.submit(detect, [0.0, 1.0], series)]
            for future in futures:
                future.result()
        return pool

    def run(self, data: Any, options: dict[str, Any]) -> dict[str, Any]:
        if not self._slots.acquire(timeout=self._admit_timeout_s):
            raise ApiError(503, "overloaded", "the detector is saturated: retry shortly")
        try:
            return self._run(data, options)
        finally:
            self._slots.release()

    def _run(self, data: Any, options: dict[str, Any]) -> dict[str, Any]:
        if self._pool is None:
            result = detect(data, options)
        else:
            try:
                result = self._pool.submit(detect, data, options).result()
            except BrokenProcessPool:  # a child died (OOM-killed?): replace the pool and try once more
                log.error("detector process pool broke; restarting it")
                self._pool = self._new_pool()
                result = self._pool.submit(detect, data, options).result()
        metrics.INFERENCE_DURATION.observe(result["inference_ms"] / 1000)
        metrics.DETECTIONS_FLAGGED.inc(result["n_flagged"])
        return result

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=False)
