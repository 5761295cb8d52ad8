"""Every kind of bad input gets a 4xx JSON error naming the field, never a 500, never a stored row."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from servers import ServiceProcess
from service_testkit import count_rows, service_env

pytestmark = pytest.mark.integration

MAX_POINTS = 500
MAX_BODY = 200_000


@pytest.fixture(scope="module")
def api(postgres, redis_server, moto, aws, api_key, tmp_path_factory) -> Iterator[ServiceProcess]:
    """An instance with small limits, so the oversized cases stay cheap."""
    env = service_env(
        postgres, redis_server.url, moto, aws, api_key,
        PYNOMALY_MAX_SERIES_LENGTH=str(MAX_POINTS), PYNOMALY_MAX_BODY_BYTES=str(MAX_BODY),
    )  # fmt: skip
    proc = ServiceProcess("service.api", env, tmp_path_factory.mktemp("api-limits")).start()
    yield proc
    proc.stop()


@pytest.fixture
def no_new_rows(db) -> Iterator[None]:
    before = count_rows(db, "detections"), count_rows(db, "jobs")
    yield
    assert (count_rows(db, "detections"), count_rows(db, "jobs")) == before


def raw(series: str) -> str:
    return '{"series": ' + series + "}"


# (raw JSON body, expected status, expected field)
BAD_BODIES = {
    "malformed-json": ('{"series": [1, 2', 400, "body"),
    "trailing-garbage": ('{"series": [1, 2]} x', 400, "body"),
    "not-an-object": ("[1, 2, 3]", 422, "body"),
    "empty-object": ("{}", 422, "series"),
    "series-is-a-string": (raw('"1,2,3"'), 422, "series"),
    "series-is-a-number": (raw("7"), 422, "series"),
    "string-element": (raw('[1, "2", 3]'), 422, "series[1]"),
    "bool-element": (raw("[1, true, 3]"), 422, "series[1]"),
    "null-element": (raw("[1, null, 3]"), 422, "series[1]"),
    "nested-element": (raw("[1, [2], 3]"), 422, "series[1]"),
    "empty-series": (raw("[]"), 422, "series"),
    "nan": (raw("[1, NaN, 3]"), 422, "series[1]"),
    "infinity": (raw("[1, 2, Infinity]"), 422, "series[2]"),
    "minus-infinity": (raw("[-Infinity, 2]"), 422, "series[0]"),
    "overflow-to-infinity": (raw("[1, 1e400]"), 422, "series[1]"),
    "oversized-series": (raw(json.dumps(list(range(MAX_POINTS + 1)))), 413, "series"),
    "oversized-body": (raw(json.dumps([0.123456789] * 20_000)), 413, "body"),
    "series-and-rows": ('{"series": [1, 2], "rows": [[1], [2]]}', 422, "series"),
    "ragged-rows": ('{"rows": [[1, 2], [3]]}', 422, "rows"),
    "empty-row": ('{"rows": [[]]}', 422, "rows[0]"),
    "too-many-features": (json.dumps({"rows": [[1.0] * 101]}), 422, "rows[0]"),
    "nan-in-rows": ('{"rows": [[1, 2], [NaN, 3]]}', 422, "rows[1][0]"),
    "oversized-rows": (json.dumps({"rows": [[1.0, 2.0]] * (MAX_POINTS + 1)}), 413, "rows"),
    "unknown-option": ('{"series": [1, 2], "contamnation": 0.1}', 422, "contamnation"),
    "contamination-too-high": ('{"series": [1, 2], "contamination": 0.7}', 422, "contamination"),
    "contamination-a-word": ('{"series": [1, 2], "contamination": "high"}', 422, "contamination"),
    "contamination-bool": ('{"series": [1, 2], "contamination": true}', 422, "contamination"),
    "trees-zero": ('{"series": [1, 2], "n_estimators": 0}', 422, "n_estimators"),
    "trees-too-many": ('{"series": [1, 2], "n_estimators": 100000}', 422, "n_estimators"),
    "trees-fractional": ('{"series": [1, 2], "n_estimators": 2.5}', 422, "n_estimators"),
    "trees-a-string": ('{"series": [1, 2], "n_estimators": "10"}', 422, "n_estimators"),
}


@pytest.mark.parametrize("path", ["/api/v1/detect", "/api/v1/jobs"])
@pytest.mark.parametrize("case", list(BAD_BODIES), ids=list(BAD_BODIES))
def test_bad_input_is_a_4xx_naming_the_field(client, no_new_rows, path, case):
    body, status, field = BAD_BODIES[case]
    reply = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["field"] == field, error
    assert field in error["message"] or error["code"] in ("malformed_json", "too_large")


def test_a_body_that_is_not_json_content_is_refused(client, no_new_rows):
    reply = client.post("/api/v1/detect", content="series=1,2,3", headers={"Content-Type": "text/plain"})
    assert 400 <= reply.status_code < 500
    assert "error" in reply.json()


def test_bad_job_ids(client, no_new_rows):
    reply = client.post("/api/v1/jobs", json={"series": [1, 2], "job_id": "job-1"})
    assert (reply.status_code, reply.json()["error"]["field"]) == (422, "job_id")
    reply = client.get("/api/v1/jobs/not-a-uuid")
    assert (reply.status_code, reply.json()["error"]["field"]) == (422, "job_id")
    reply = client.get("/api/v1/jobs/00000000-0000-0000-0000-000000000000")
    assert (reply.status_code, reply.json()["error"]["field"]) == (404, "job_id")


def test_unknown_routes_answer_json(client):
    reply = client.get("/api/v1/nothing-here")
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "not_found"
    assert client.get("/api/v1/detect").status_code == 405


def test_the_limits_themselves_are_accepted(client):
    reply = client.post("/api/v1/detect", json={"series": [float(i % 7) for i in range(MAX_POINTS)]})
    assert reply.status_code == 200, reply.text
    assert len(reply.json()["scores"]) == MAX_POINTS


def test_a_single_point_is_enough(client):
    reply = client.post("/api/v1/detect", json={"series": [3.5]})
    assert reply.status_code == 200, reply.text
    assert len(reply.json()["flags"]) == 1
