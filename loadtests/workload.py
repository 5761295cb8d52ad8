"""The requests the locustfile sends, modelled on the API's clients: what, how often, with which data.

Most traffic is ``POST /api/v1/detect`` with series of realistic sizes; health and readiness checks are light;
batch jobs are submitted and polled; a small share of bad requests must get their 4xx (counted as expected,
not as errors). Data come from a seeded RNG: reproducible, and different from request to request, because
the service caches results by input and identical bodies would measure the cache. A configurable share
repeats a recent body, as real clients do. Pure: no Locust, no network.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections import deque
from dataclasses import dataclass

DETECT = "POST /api/v1/detect"
JOB_SUBMIT = "POST /api/v1/jobs"
JOB_POLL = "GET /api/v1/jobs/{id}"
HEALTH = "GET /health"


@dataclass(frozen=True)
class Kind:
    name: str  # the endpoint's name in the statistics
    weight: float
    method: str
    path: str
    expected_status: int | None = None  # a bad request: exactly this 4xx is a success
    body: str | None = None  # a fixed body (bad requests); None: generated
    authorized: bool = True


BAD = (
    Kind("bad: empty series", 1.5, "POST", "/api/v1/detect", 422, '{"series": []}'),
    Kind("bad: not numbers", 1.5, "POST", "/api/v1/detect", 422, '{"series": ["a", "b"]}'),
    Kind("bad: malformed JSON", 1.0, "POST", "/api/v1/detect", 400, '{"series": [1, 2'),
    Kind("bad: job id not a UUID", 0.5, "GET", "/api/v1/jobs/not-a-uuid", 422),
    # 0.5 % of requests: far below the auth-failure alarm (app_alarms.auth_failure_rate_percent)
    Kind("bad: no API key", 0.5, "POST", "/api/v1/detect", 401, '{"series": [1, 2, 3]}', authorized=False),
)
MIXES: dict[str, tuple[Kind, ...]] = {
    # The API's traffic: about 70 % detections.
    "api": (
        Kind(HEALTH, 15, "GET", "/health"),  # /ready is the instance port's, not the load balancer's
        Kind(DETECT, 70, "POST", "/api/v1/detect"),
        Kind(JOB_SUBMIT, 4, "POST", "/api/v1/jobs"),
        Kind(JOB_POLL, 6, "GET", "/api/v1/jobs/{id}"),
        *BAD,
    ),
    # Liveness only: the benchmark's static endpoint, and a target without the API.
    "health": (Kind(HEALTH, 1, "GET", "/health"),),
}
SERIES_SIZES = (100, 500, 1000, 2000)
SERIES_WEIGHTS = (2, 3, 4, 1)
RECENT = 50  # bodies a client may send again
DEFAULT_REPEAT_SHARE = 0.05
DEFAULT_SEED = 20261202


class Generator:
    """One client's request stream: ``next()`` -> (kind, body or None); seeded, so a run is reproducible."""

    def __init__(self, seed: int | str, mix: str = "api", repeat_share: float = DEFAULT_REPEAT_SHARE) -> None:
        if mix not in MIXES:
            raise ValueError(f"unknown mix {mix!r}; the mixes: {', '.join(MIXES)}")
        if not 0 <= repeat_share <= 1:
            raise ValueError(f"repeat share must be in [0, 1], got {repeat_share:g}")
        self.rng = random.Random(str(seed))
        self.kinds = MIXES[mix]
        self.cum_weights = list(itertools.accumulate(k.weight for k in self.kinds))
        self.repeat_share = repeat_share
        self.recent: deque[str] = deque(maxlen=RECENT)
        self.jobs: deque[str] = deque(maxlen=RECENT)

    def pick(self) -> Kind:
        kind = self.rng.choices(self.kinds, cum_weights=self.cum_weights)[0]
        if kind.name == JOB_POLL and not self.jobs:
            return next(k for k in self.kinds if k.name == JOB_SUBMIT)
        return kind

    def series(self) -> list[float]:
        """A daily-cycle signal with noise and a few clear outliers, of a realistic length."""
        n = self.rng.choices(SERIES_SIZES, SERIES_WEIGHTS)[0]
        rng, level, amplitude = self.rng, self.rng.uniform(10, 100), self.rng.uniform(1, 10)
        points = [level + amplitude * math.sin(2 * math.pi * i / 96) + rng.gauss(0, 1) for i in range(n)]
        for _ in range(rng.randint(0, 3)):
            points[rng.randrange(n)] += rng.choice((-1, 1)) * rng.uniform(5, 8) * amplitude
        return [round(p, 4) for p in points]

    def body(self, kind: Kind) -> str | None:
        if kind.body is not None or kind.method == "GET":
            return kind.body
        if self.recent and self.rng.random() < self.repeat_share:
            return self.rng.choice(self.recent)
        text = json.dumps({"series": self.series()})
        self.recent.append(text)
        return text

    def path(self, kind: Kind) -> str:
        if kind.name == JOB_POLL:
            return kind.path.replace("{id}", self.rng.choice(self.jobs))
        return kind.path

    def job_submitted(self, job_id: str) -> None:
        self.jobs.append(job_id)
