"""The objectives come from the numbers file: change a number there and the drill's limit follows; a missing
figure is never a pass; an unknown drill is named with the valid ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from drills import catalog
from pynomaly_ops.alarms import STRUCTURAL
from pynomaly_ops.baselines import DEFAULT_PATH, PATH_ENV, load


def _numbers_copy(tmp_path: Path, **changes: Any) -> Path:
    """baselines.yaml with ``changes`` (dotted keys, ``__`` for dots) written to tmp_path."""
    numbers = yaml.safe_load(DEFAULT_PATH.read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = numbers
        for part in parents:
            node = node[part]
        assert last in node, f"{dotted}: no such key in baselines.yaml"
        node[last] = value
    path = tmp_path / "baselines.yaml"
    path.write_text(yaml.safe_dump(numbers))
    return path


def _at(numbers: dict[str, Any], dotted: str) -> Any:
    node: Any = numbers
    for part in dotted.split("."):
        node = node[part]
    return node


def _objective(drill: str, measured: str) -> catalog.Objective:
    (objective,) = [o for o in catalog.get(drill).objectives if o.measured == measured]
    return objective


def test_an_objective_follows_its_number_in_the_file(tmp_path, monkeypatch):
    objective = _objective("database-failover", "write_outage_s")
    assert objective.source == "recovery.database_failover.rto_s"
    assert objective.limit(load()) == 120  # the repository's number, the starting point
    copy = _numbers_copy(tmp_path, recovery__database_failover__rto_s=37.5)
    monkeypatch.setenv(PATH_ENV, str(copy))
    b = load()
    assert objective.limit(b) == 37.5
    assert objective.check(b, {"write_outage_s": 40.0})["met"] is False  # met at 120, missed at 37.5
    assert objective.check(b, {"write_outage_s": 30.0})["limit"] == "<= 37.5"
    assert catalog.get("database-failover").verdict(b, {"write_outage_s": 40.0, "writes_lost": 0})[0]["met"] is False


def test_an_error_rate_objective_follows_the_threshold_level_it_names(tmp_path, monkeypatch):
    copy = _numbers_copy(
        tmp_path, thresholds__error_rate_percent__warning=2.5, recovery__cache_flush__max_error_rate="critical"
    )
    monkeypatch.setenv(PATH_ENV, str(copy))
    b = load()
    assert _objective("instance-loss", "error_rate_percent").limit(b) == 2.5
    assert _objective("cache-flush", "error_rate_percent").limit(b) == 5  # the critical level


def test_every_objective_reads_the_number_its_source_names(tmp_path, monkeypatch):
    """Each number moved to a value of its own: every limit must be the one at its ``source`` key."""
    changes = {
        "recovery__database_failover__rto_s": 111,
        "recovery__database_failover__acknowledged_writes_lost": 3,
        "recovery__instance_loss__capacity_back_s__local": 22,
        "recovery__instance_loss__capacity_back_s__aws": 222,
        "recovery__pod_loss__pods_back_s": 88,
        "recovery__node_drain__rescheduled_s": 99,
        "recovery__cache_failover__rto_s": 33,
        "recovery__cache_flush__p95_back_s": 44,
        "recovery__traffic_spike__p95_back_s": 55,
        "recovery__maintenance__switch_s": 66,
        "recovery__bad_deploy__rollback_s": 77,
        "thresholds__error_rate_percent__warning": 1.5,
        "thresholds__error_rate_percent__critical": 6.5,
        "app_alarms__processing_lag_s": 222,
    }
    defaults = load()
    copy = _numbers_copy(tmp_path, **changes)
    monkeypatch.setenv(PATH_ENV, str(copy))
    numbers, b = yaml.safe_load(copy.read_text()), load()
    for drill in catalog.DRILLS:
        for objective, target in ((o, t) for o in drill.objectives for t in drill.targets):
            limit, source = objective.limit_for(b, target), objective.source_for(b, target)
            if objective.source.startswith(STRUCTURAL):  # a rule, not a number of the file: it does not move
                assert limit == objective.limit_for(defaults, target) in (0, 1)
                continue
            expected = _at(numbers, source)
            if expected in ("warning", "critical"):  # an error-rate level: its number is that level's threshold
                expected = numbers["thresholds"]["error_rate_percent"][expected]
            elif isinstance(expected, str):  # another number of the file, by its key (an app_alarms one)
                expected = numbers["app_alarms"][expected]
            assert limit == expected, f"{drill.name} on {target}: {objective.what} is not {source}"


def test_objective_check_meets_and_misses():
    b = load()
    rto = _objective("database-failover", "write_outage_s")
    rpo = _objective("database-failover", "writes_lost")
    at_limit = rto.check(b, {"write_outage_s": 120.0})
    assert at_limit == {
        "objective": rto.what,
        "measured": 120.0,
        "limit": "<= 120",
        "source": "recovery.database_failover.rto_s",
        "met": True,
    }
    assert rto.check(b, {"write_outage_s": 120.01})["met"] is False
    assert rto.check(b, {"write_outage_s": 0.0})["met"] is True
    assert rpo.check(b, {"writes_lost": 0})["met"] is True
    assert rpo.check(b, {"writes_lost": 1})["met"] is False
    assert rpo.check(b, {"writes_lost": 0})["limit"] == "== 0"


@pytest.mark.parametrize("measurements", [{}, {"write_outage_s": None, "writes_lost": None}])
def test_a_missing_measurement_is_not_met(measurements):
    results = catalog.get("database-failover").verdict(load(), measurements)
    assert [r["met"] for r in results] == [False, False, False]
    assert all(r["measured"] is None for r in results)


def test_an_unknown_drill_names_the_valid_ones():
    with pytest.raises(catalog.UnknownDrill) as raised:
        catalog.get("nope")
    message = raised.value.args[0]
    assert "'nope'" in message
    for drill in catalog.DRILLS:
        assert drill.name in message
    assert catalog.get("cache-flush").name == "cache-flush"
