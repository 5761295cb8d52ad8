"""Pure units: configuration parsing, the detector, error rendering, job messages and result keys (no servers)."""

from __future__ import annotations

import json
import uuid

import pytest

from service.config import ConfigError, load_settings
from service.detector import detect
from service.errors import field_path, validation_error
from service.queue import Message
from service.schemas import DetectRequest
from service.storage import result_key
from service.worker import PoisonMessage, parse


def test_defaults_need_no_environment():
    s = load_settings({})
    assert (s.host, s.port, s.db_pool_min, s.db_pool_max, s.redis_timeout_s) == ("127.0.0.1", 8000, 2, 10, 0.5)
    assert s.max_series_length == 100_000 and s.redis_sentinels == ()


def test_sentinels_are_parsed():
    s = load_settings({"PYNOMALY_REDIS_SENTINELS": "127.0.1.1:26379, 127.0.2.1:26379"})
    assert s.redis_sentinels == (("127.0.1.1", 26379), ("127.0.2.1", 26379))


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PYNOMALY_PORT": "http"}, "PYNOMALY_PORT"),
        ({"PYNOMALY_DB_POOL_MAX": "0"}, "PYNOMALY_DB_POOL_MAX"),
        ({"PYNOMALY_DB_POOL_MIN": "5", "PYNOMALY_DB_POOL_MAX": "2"}, "PYNOMALY_DB_POOL_MIN"),
        ({"PYNOMALY_REDIS_TIMEOUT_S": "-1"}, "PYNOMALY_REDIS_TIMEOUT_S"),
        ({"PYNOMALY_REDIS_SENTINELS": "localhost"}, "PYNOMALY_REDIS_SENTINELS"),
        ({"PYNOMALY_MAX_SERIES_LENGTH": "lots"}, "PYNOMALY_MAX_SERIES_LENGTH"),
        ({"PYNOMALY_WORKER_WAIT_S": "30"}, "PYNOMALY_WORKER_WAIT_S"),
        ({"PYNOMALY_BOOTSTRAP_API_KEY": "short"}, "PYNOMALY_BOOTSTRAP_API_KEY"),
        ({"PYNOMALY_AUTH_CACHE_S": "-1"}, "PYNOMALY_AUTH_CACHE_S"),
    ],
)
def test_bad_settings_name_the_variable(env, named):
    with pytest.raises(ConfigError, match=named):
        load_settings(env)


def test_detector_is_deterministic_and_flags_the_outlier():
    points = [[float(i % 10)] for i in range(300)] + [[500.0]]
    options = {"n_estimators": 20, "contamination": 0.01}
    first, second = detect(points, options), detect(points, options)
    assert first["scores"] == second["scores"]
    assert first["flags"][-1] is True and first["scores"][-1] == max(first["scores"])
    assert first["n_flagged"] == sum(first["flags"])


def test_the_cache_key_depends_on_data_and_options():
    a = DetectRequest(series=[1, 2, 3])
    options = a.resolved_options(25)
    assert a.input_hash(options) == DetectRequest(series=[1.0, 2.0, 3.0]).input_hash(options)
    assert a.input_hash(options) != DetectRequest(series=[1, 2, 4]).input_hash(options)
    assert a.input_hash(options) == a.input_hash(a.resolved_options(26))  # trees are the forest's option only
    assert a.input_hash(options) != DetectRequest(series=[1, 2, 3], threshold=3).input_hash(options | {"threshold": 3})
    forest = DetectRequest(series=[1, 2, 3], method="isolation_forest")
    assert forest.input_hash(forest.resolved_options(25)) != forest.input_hash(forest.resolved_options(26))
    assert a.input_hash(options) != DetectRequest(rows=[[1], [2], [3]]).input_hash(options)


def test_error_paths_read_like_the_json():
    assert field_path(("body", "rows", 3, 1)) == "rows[3][1]"
    assert field_path(("path", "job_id")) == "job_id"
    assert field_path(("body",)) == "body"
    error = validation_error([{"type": "finite_number", "loc": ("body", "series", 2), "msg": "x"}])
    assert (error.status, error.field) == (422, "series[2]")
    assert "NaN" in error.message


def message(body: object) -> Message:
    return Message(receipt="r", body=body if isinstance(body, str) else json.dumps(body), receive_count=1)


def test_a_job_message_names_its_key_and_one_from_before_names_none():
    job_id = uuid.uuid4()
    assert parse(message({"key_name": "a", "job_id": str(job_id), "submitted_at": 1.5})) == ("a", job_id, 1.5)
    assert parse(message({"job_id": str(job_id), "submitted_at": 1})) == (None, job_id, 1.0)


@pytest.mark.parametrize(
    "body",
    ["not json", [1, 2], {"key_name": 7, "job_id": str(uuid.uuid4()), "submitted_at": 0}, {"key_name": "a"}],
    ids=["not-json", "a-list", "key-name-not-a-string", "no-job-id"],
)
def test_malformed_job_messages_are_poison(body):
    with pytest.raises(PoisonMessage, match="malformed job message"):
        parse(message(body))


def test_result_keys_keep_key_names_apart():
    assert result_key("a", "j") == "jobs/a/j/result.json"
    assert result_key("a/j", "k") != result_key("a", "j/k")  # a '/' in a name stays inside its segment
