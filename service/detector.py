"""The detector: scikit-learn's IsolationForest, fitted per request with a fixed random_state,
so the same input always gives the same scores.

Fitting is CPU-bound and largely pure Python inside scikit-learn, so the API runs
it in a small pool of processes: it neither blocks the event loop nor holds the
API process's GIL (health checks stay responsive, and both cores are used).
The pool's processes ignore SIGINT/SIGTERM so a graceful shutdown of the API can
let in-flight detections finish.

Cost: scikit-learn spends about 1.3 ms of Python per tree whatever the data size, so
the default forest is small (``PYNOMALY_DETECTOR_TREES``, 5) to serve 50 requests/s
of 1,000 points on two cores; clear outliers are flagged as with 100 trees, while the
ranking of subtle ones is noisier. A request may ask for up to 200 trees.
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


def detect(data: list[float] | list[list[float]], options: dict[str, Any]) -> dict[str, Any]:
    """Per-point anomaly scores (higher = more anomalous) and flags, plus the fit+score time."""
    # Imported here, not at the top: only the processes that detect pay for loading scikit-learn.
    import numpy as np
    from sklearn.ensemble import IsolationForest

    started = time.perf_counter()
    x = np.asarray(data, dtype=float)
    if x.ndim == 1:  # a univariate series: one feature per point
        x = x.reshape(-1, 1)
    model = IsolationForest(
        n_estimators=options["n_estimators"],
        max_samples=min(MAX_SAMPLES, len(x)),
        contamination=options["contamination"],
        random_state=RANDOM_STATE,
        n_jobs=1,
    ).fit(x)
    raw = model.score_samples(x)  # scored once: predict() would score again
    flags = raw < model.offset_
    return {
        "scores": np.round(-raw, 6).tolist(),
        "flags": flags.tolist(),
        "threshold": round(float(-model.offset_), 6),
        "n_flagged": int(flags.sum()),
        "inference_ms": (time.perf_counter() - started) * 1000,
    }


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
        warm_up = {"n_estimators": 1, "contamination": "auto"}
        for future in [pool.submit(detect, [[0.0], [1.0]], warm_up) for _ in range(self._processes)]:
            future.result()  # import scikit-learn in every child before the first request
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
