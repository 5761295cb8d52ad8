"""The API end to end against real PostgreSQL, Redis and moto: happy paths, auth, metrics, jobs."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.integration


def spiky_series(n: int = 1000, seed: int = 0) -> list[float]:
    values = np.random.default_rng(seed).normal(0, 1, n)
    values[n // 2] = 25.0  # one obvious anomaly
    return [round(float(v), 6) for v in values]


def test_health_never_needs_dependencies(api, client):
    reply = client.get("/health")
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok", "instance": api.env["PYNOMALY_INSTANCE_ID"]}


def test_ready_reports_every_dependency(client):
    reply = client.get("/ready")
    assert reply.status_code == 200, reply.text
    assert reply.json()["checks"] == {"database": "ok", "queue": "ok", "cache": "ok"}
    assert reply.json()["status"] == "ready"


def test_detect_flags_the_spike_and_stores_the_request(client, db):
    series = spiky_series()
    reply = client.post("/api/v1/detect", json={"series": series, "contamination": 0.01})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert len(body["scores"]) == len(body["flags"]) == len(series)
    assert body["flags"][len(series) // 2] is True
    assert body["scores"][len(series) // 2] > body["threshold"]
    assert body["n_flagged"] == sum(body["flags"]) > 0
    row = db.execute(
        "SELECT n_points, n_features, jsonb_array_length(scores), n_flagged, cached, inference_ms > 0, total_ms > 0"
        " FROM detections WHERE id = %s",
        (body["id"],),
    ).fetchone()
    assert row == (len(series), 1, len(series), body["n_flagged"], False, True, True)
