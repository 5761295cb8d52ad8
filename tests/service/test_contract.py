"""The OpenAPI document tells the truth: Schemathesis generates requests from it (valid and invalid) and checks
every answer against it, against a real service on real PostgreSQL, Redis and moto."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ST = Path(sys.executable).with_name("st")


def test_schemathesis_finds_no_failure_with_every_check(api, api_key, tmp_path):
    run = subprocess.run(
        [
            str(ST),
            "--no-color",
            "run",
            f"{api.base_url}/openapi.json",
            "--checks",
            "all",
            "--header",
            f"Authorization: Bearer {api_key}",
            "--max-examples",
            "100",
            "--seed",
            "17",
            "--workers",
            "2",
        ],
        env=os.environ | {"SCHEMATHESIS_HOOKS": "schemathesis_hooks", "PYTHONPATH": str(Path(__file__).parent)},
        cwd=tmp_path,  # its example database (.schemathesis/) stays out of the checkout
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    assert re.search(r"Tested: 6\b", run.stdout), run.stdout  # every operation of the document
    generated = int(re.search(r"(\d+) generated", run.stdout).group(1))
    assert generated > 500, run.stdout  # valid and invalid requests, not a token run


def test_a_wrong_method_names_the_allowed_ones_and_metrics_are_prometheus_text(client):
    reply = client.delete("/api/v1/detect")
    assert reply.status_code == 405 and reply.headers["allow"] == "POST"
    assert reply.json()["error"]["code"] == "method_not_allowed"
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain") and "# TYPE" in metrics.text
    document = client.get("/openapi.json").json()
    assert list(document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    detect = document["components"]["schemas"]["DetectRequest"]
    assert detect["oneOf"] == [
        {"required": ["series"], "properties": {"series": {"type": "array"}}},
        {"required": ["rows"], "properties": {"rows": {"type": "array"}}},
    ]
    assert {o.get("maxItems") for o in detect["properties"]["series"]["anyOf"]} == {100_000, None}
