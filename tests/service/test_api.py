"""The API end to end against real PostgreSQL, Redis and moto: happy paths, auth, metrics, jobs."""

from __future__ import annotations

import uuid

import httpx
import numpy as np
import pytest
from service_testkit import count_rows, metric_value, wait_until

from pynomaly_ops import metrics
from service import auth

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


def test_same_input_is_served_from_the_cache_and_still_stored(client, db):
    payload = {"series": spiky_series(seed=1)}
    first = client.post("/api/v1/detect", json=payload).json()
    second = client.post("/api/v1/detect", json=payload).json()
    assert (first["cached"], second["cached"]) == (False, True)
    assert second["scores"] == first["scores"] and second["flags"] == first["flags"]
    stored = db.execute("SELECT cached FROM detections WHERE id = %s", (second["id"],)).fetchone()
    assert stored == (True,)


def test_same_input_gives_the_same_scores_without_the_cache(client):
    series = spiky_series(seed=2)
    first = client.post("/api/v1/detect", json={"series": series, "n_estimators": 30}).json()
    second = client.post("/api/v1/detect", json={"series": series, "n_estimators": 31}).json()
    third = client.post("/api/v1/detect", json={"series": series, "n_estimators": 30}).json()
    assert not second["cached"] and second["scores"] != first["scores"]  # a different forest
    assert third["scores"] == first["scores"]  # fixed random_state: reproducible


def test_multivariate_rows(client, db):
    rng = np.random.default_rng(3)
    rows = rng.normal(0, 1, (300, 3)).round(6).tolist()
    rows[42] = [15.0, -15.0, 15.0]
    reply = client.post("/api/v1/detect", json={"rows": rows, "contamination": 0.01})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert len(body["scores"]) == 300 and body["flags"][42] is True
    assert db.execute("SELECT n_features FROM detections WHERE id = %s", (body["id"],)).fetchone() == (3,)


def test_metrics_expose_every_contract_name(client):
    client.post("/api/v1/detect", json={"series": spiky_series(seed=4)})
    text = client.get("/metrics").text
    for name in (
        metrics.HTTP_REQUESTS,
        metrics.INFERENCE_DURATION + "_count",
        metrics.HTTP_DURATION + "_count",
        metrics.AUTH_REQUESTS,
        metrics.CACHE_REQUESTS,
        metrics.DETECTIONS_FLAGGED,
    ):
        assert metric_value(text, name) > 0, name
    for name in (metrics.JOB_PROCESSING_LAG, metrics.AUTH_FAILURES, metrics.QUEUE_SENT):
        assert f"\n{name} " in text, name
    assert metric_value(text, metrics.HTTP_REQUESTS, route="/api/v1/detect", method="POST", status="200") > 0
    assert metric_value(text, metrics.DB_POOL, state="idle") >= 0
    assert f'{metrics.DB_POOL}{{state="in_use"}}' in text


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Basic dXNlcjpwYXNz", "Bearer not-a-real-key-0123456789"],
    ids=["missing", "empty", "wrong-scheme", "unknown-key"],
)
def test_requests_without_a_valid_key_are_refused_and_counted(api, client, header, db):
    before_rows = count_rows(db, "detections")
    before = metric_value(client.get("/metrics").text, metrics.AUTH_FAILURES)
    headers = {} if header is None else {"Authorization": header}
    with httpx.Client(base_url=api.base_url, headers=headers) as anonymous:
        reply = anonymous.post("/api/v1/detect", json={"series": [1, 2, 3]})
    assert reply.status_code == 401
    assert reply.json()["error"]["field"] == "Authorization"
    assert reply.headers["www-authenticate"] == "Bearer"
    assert metric_value(client.get("/metrics").text, metrics.AUTH_FAILURES) == before + 1
    assert count_rows(db, "detections") == before_rows


def test_a_revoked_key_stops_working(api, db):
    key = "revocable-" + uuid.uuid4().hex
    db.execute("INSERT INTO api_keys (key_hash, name) VALUES (%s, 'temp')", (auth.hash_key(key),))
    with httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {key}"}) as c:
        assert c.post("/api/v1/detect", json={"series": [1, 2, 3]}).status_code == 200
        db.execute("UPDATE api_keys SET revoked_at = now() WHERE key_hash = %s", (auth.hash_key(key),))
        refused = lambda: c.post("/api/v1/detect", json={"series": [1, 2, 3]}).status_code == 401  # noqa: E731
        wait_until(refused, 10, "the revocation to take effect (PYNOMALY_AUTH_CACHE_S)", interval_s=0.2)


def test_only_the_key_hash_is_stored(api_key, db):
    hashes = [r[0] for r in db.execute("SELECT key_hash FROM api_keys WHERE name = 'bootstrap'")]
    assert hashes == [auth.hash_key(api_key)]
    assert api_key not in str(db.execute("SELECT * FROM api_keys").fetchall())
