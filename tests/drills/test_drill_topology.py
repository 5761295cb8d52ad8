"""The target's shape before and after a drill, on synthetic readings: a failover that swapped roles leaves
the shape intact; an instance down or a part that cannot be read does not."""

from __future__ import annotations

from typing import Any

import pytest

from drills import topology
from local import probes
from local.programs import REDIS_NODES

HEALTHY: dict[str, Any] = {
    "instances": 3,
    "instances_up": 3,
    "database_ready": True,
    "redis_roles": ["master", "slave"],
    "queues": {"jobs": 0, "dead_letters": 0},
}


def _shape(**changes: Any) -> dict[str, Any]:
    return {**HEALTHY, **changes}


class FakeTarget:
    """What the probes read from a stack, as plain attributes a test changes."""

    def __init__(self) -> None:
        self.instances = {"api-1": "UP", "api-2": "UP", "api-3": "UP"}
        nodes = sorted(REDIS_NODES)
        self.redis = {nodes[0]: "master", nodes[1]: "slave"}
        self.database_ready: bool | Exception = True
        self.queues = {"jobs": 0, "dead_letters": 0}

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def instance_count(state_dir=None, status=None):
            return sum(status is None or s == status for s in self.instances.values())

        def database_ready(state_dir=None):
            if isinstance(self.database_ready, Exception):
                raise self.database_ready
            return self.database_ready

        monkeypatch.setattr(probes, "instance_count", instance_count)
        monkeypatch.setattr(probes, "database_ready", database_ready)
        monkeypatch.setattr(probes, "redis_role", lambda name, state_dir=None: self.redis[name])
        monkeypatch.setattr(topology, "_queue_depths", lambda state_dir: dict(self.queues))


@pytest.fixture
def target(monkeypatch) -> FakeTarget:
    fake = FakeTarget()
    fake.install(monkeypatch)
    return fake


def test_the_normal_shape_is_healthy():
    assert topology.healthy(HEALTHY)
    assert topology.differences(HEALTHY, dict(HEALTHY)) == {}


@pytest.mark.parametrize(
    "broken",
    [
        {"instances_up": 2},
        {"database_ready": False},
        {"redis_roles": ["master", "master"]},
        {"redis_roles": ["slave", "slave"]},
        {"queues": {"jobs": 0, "dead_letters": 1}},
        {"instances": "unreadable: ProbeError: no stats socket", "instances_up": "unreadable: ProbeError: x"},
        {"database_ready": "unreadable: ConnectionError: refused"},
    ],
    ids=["instance-down", "no-standby", "two-primaries", "no-primary", "dead-letter", "lb-unreadable", "db-unreadable"],
)
def test_a_broken_shape_is_not_healthy_and_differs(broken):
    after = _shape(**broken)
    assert not topology.healthy(after)
    differences = topology.differences(HEALTHY, after)
    assert set(differences) == set(broken)
    for key, value in broken.items():
        assert differences[key] == {"before": HEALTHY[key], "after": value}


def test_a_snapshot_reads_every_part(target):
    assert topology.snapshot() == HEALTHY


def test_a_failover_that_swapped_the_roles_is_the_same_shape(target):
    before = topology.snapshot()
    target.redis = {name: "slave" if role == "master" else "master" for name, role in target.redis.items()}
    after = topology.snapshot()
    assert topology.healthy(after)
    assert topology.differences(before, after) == {}


def test_one_instance_down_is_not_the_same_shape(target):
    before = topology.snapshot()
    target.instances["api-2"] = "DOWN"
    after = topology.snapshot()
    assert not topology.healthy(after)
    assert topology.differences(before, after) == {"instances_up": {"before": 3, "after": 2}}


def test_a_part_that_cannot_be_read_is_recorded_and_is_a_difference(target):
    before = topology.snapshot()
    target.database_ready = probes.ProbeError("patroni REST API refused")
    after = topology.snapshot()  # does not raise: the error is part of the picture
    assert after["database_ready"] == "unreadable: ProbeError: patroni REST API refused"
    assert not topology.healthy(after)
    assert set(topology.differences(before, after)) == {"database_ready"}


def test_wait_until_restored_returns_once_the_shape_is_back(monkeypatch):
    readings = iter([_shape(instances_up=2), _shape(instances_up=2), dict(HEALTHY)])
    monkeypatch.setattr(topology, "snapshot", lambda state_dir=None: next(readings))
    sleeps: list[float] = []
    monkeypatch.setattr(topology.time, "sleep", sleeps.append)
    after, waited = topology.wait_until_restored(HEALTHY, timeout_s=60)
    assert after == HEALTHY and len(sleeps) == 2
    assert waited < 60


def test_wait_until_restored_gives_up_at_its_deadline_with_the_last_reading(monkeypatch):
    monkeypatch.setattr(topology, "snapshot", lambda state_dir=None: _shape(instances_up=2))
    after, _ = topology.wait_until_restored(HEALTHY, timeout_s=0)
    assert topology.differences(HEALTHY, after) == {"instances_up": {"before": 3, "after": 2}}
