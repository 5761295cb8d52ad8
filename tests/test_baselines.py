"""The numbers file and its loader: values, validation, and which file is read."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pynomaly_ops import baselines
from pynomaly_ops.baselines import BaselinesError


def _raw() -> dict:
    return yaml.safe_load(baselines.DEFAULT_PATH.read_text())


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "numbers.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _error(tmp_path: Path, change) -> str:
    data = _raw()
    change(data)
    path = _write(tmp_path, data)
    with pytest.raises(BaselinesError) as caught:
        baselines.load(path)
    message = str(caught.value)
    assert str(path) in message  # every error names the file
    return message


def test_the_repo_file_loads_with_the_values_it_holds():
    raw, b = _raw(), baselines.load()
    for name, level in b.thresholds.levels().items():
        assert (level.warning, level.critical) == (
            raw["thresholds"][name]["warning"],
            raw["thresholds"][name]["critical"],
        )
    assert b.scaling.instances_normal == raw["scaling"]["instances_normal"]
    assert b.app_alarms.processing_lag_s == raw["app_alarms"]["processing_lag_s"]
    assert b.database.max_connections == raw["database"]["max_connections"]
    assert b.queue_backlog_drain_s == b.app_alarms.processing_lag_s
    assert b.instance_loss_max_error_rate_percent == b.thresholds.error_rate_percent.warning


def test_every_threshold_warning_sits_below_its_critical():
    b = baselines.load()
    levels = [*b.thresholds.levels().values(), b.database.replica_lag_s]
    assert all(level.warning < level.critical for level in levels)


@pytest.mark.parametrize("section", ["thresholds", "database"])
def test_warning_at_or_above_critical_is_refused(tmp_path, section):
    def change(data):
        key = "cpu_percent" if section == "thresholds" else "replica_lag_s"
        data[section][key]["warning"] = data[section][key]["critical"]

    message = _error(tmp_path, change)
    assert f"{section}." in message and "warning" in message and "must be below critical" in message


def test_negative_value_is_refused(tmp_path):
    message = _error(tmp_path, lambda d: d["app_alarms"].update(inference_time_s=-1))
    assert "app_alarms.inference_time_s" in message


def test_missing_value_is_refused(tmp_path):
    message = _error(tmp_path, lambda d: d["thresholds"]["disk_percent"].pop("critical"))
    assert "thresholds.disk_percent.critical: missing" in message


def test_unknown_key_is_refused(tmp_path):
    message = _error(tmp_path, lambda d: d["scaling"].update(instances_peak=9))
    assert "scaling.instances_peak: unknown key" in message


def test_min_above_max_is_refused(tmp_path):
    message = _error(tmp_path, lambda d: d["normal"]["cpu_percent"].update(min=50, max=40))
    assert "normal.cpu_percent" in message and "must not exceed max" in message


def test_more_normal_instances_than_high_load_is_refused(tmp_path):
    message = _error(tmp_path, lambda d: d["scaling"].update(instances_normal=7))
    assert "scaling" in message and "instances_normal must not exceed instances_high_load" in message


def test_missing_file_and_bad_yaml_say_so(tmp_path):
    with pytest.raises(BaselinesError, match="not found"):
        baselines.load(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("thresholds: [unclosed\n")
    with pytest.raises(BaselinesError, match="not valid YAML"):
        baselines.load(bad)


def test_environment_variable_selects_another_file(tmp_path, monkeypatch):
    data = _raw()
    data["app_alarms"]["processing_lag_s"] = 123
    path = _write(tmp_path, data)
    monkeypatch.setenv(baselines.PATH_ENV, str(path))
    assert baselines.default_path() == path
    assert baselines.load().app_alarms.processing_lag_s == 123
    monkeypatch.delenv(baselines.PATH_ENV)
    assert baselines.load().app_alarms.processing_lag_s == _raw()["app_alarms"]["processing_lag_s"]


def test_the_rate_limits_sit_above_every_honest_load():
    """No load test (at peak), drill load or normal traffic of any target meets the load balancers' limits."""
    b = baselines.load()
    for target, normal in b.load.normal_rate_per_s.items():
        peak = normal * b.traffic.peak_multiplier
        assert b.request_limit_per_s(target) >= 2 * peak, target
    assert b.request_limit_per_s("local") > b.recovery.drill_load_per_s
    assert b.abuse.retry_after_s >= b.abuse.rate_window_s / 2  # a client that waits finds its window mostly drained
