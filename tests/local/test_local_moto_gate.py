"""local/moto_server.py's health gate: /moto-api/ says 503 until the queues and buckets exist;
every other request reaches moto at once (creating them goes through moto itself)."""

from __future__ import annotations

from local.moto_server import ReadyGate
from local.programs import MOTO_HEALTH_PATH


def _call(gate: ReadyGate, path: str) -> str:
    statuses: list[str] = []
    gate({"PATH_INFO": path}, lambda status, headers: statuses.append(status))
    return statuses[0]


def _moto(environ, start_response):
    start_response("200 OK", [])
    return [b"moto"]


def test_the_health_path_waits_for_the_resources_and_the_rest_does_not():
    gate = ReadyGate(_moto)
    assert _call(gate, MOTO_HEALTH_PATH).startswith("503")
    assert _call(gate, "/123456789012/local-queue-jobs").startswith("200")
    gate.ready.set()
    assert _call(gate, MOTO_HEALTH_PATH).startswith("200")
