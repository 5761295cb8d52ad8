"""Generated Prometheus rules, port and binary checks: no servers needed."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pytest
import yaml
from conftest import assert_covers_every_threshold

from local import render
from local.layout import SHARED_DB_ROOT, Layout, ports_from_env, traversable_by
from local.programs import Phase, Program, base_programs
from local.rules import _expression, rules
from local.stack import StackError, bound_ports, check_binaries, check_ports
from pynomaly_ops.alarms import CatalogueError
from pynomaly_ops.baselines import load


def _rendered_rules() -> list[dict]:
    return yaml.safe_load(render.rules_yml())["groups"][0]["rules"]


def test_rules_cover_every_threshold_at_both_levels():
    assert_covers_every_threshold(_rendered_rules())


def test_rules_use_the_service_metric_names():
    from pynomaly_ops import metrics

    exprs = " ".join(r["expr"] for r in _rendered_rules())
    for name in (metrics.HTTP_REQUESTS, metrics.HTTP_DURATION, metrics.JOB_PROCESSING_LAG):
        assert name in exprs


def test_rules_pass_promtool(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    path = tmp_path / "rules.yml"
    path.write_text(render.rules_yml())
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules(load()))} rules found" in result.stdout


def test_a_catalogue_signal_without_an_expression_is_an_error():
    with pytest.raises(CatalogueError, match=r"catalogue signal queue_depth has no Prometheus expression"):
        _expression("queue_depth")


def test_a_taken_port_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PYNOMALY_LOCAL_PORT_OFFSET", "2000")
    layout = Layout.create(tmp_path / "s", instances=1)
    with socket.socket() as s:
        s.bind((layout.zone_address("a"), layout.ports["redis"]))
        s.listen()
        with pytest.raises(StackError, match=rf"127\.0\.1\.1:{layout.ports['redis']} \(redis-a\) is taken by pid"):
            check_ports(bound_ports(layout, base_programs(layout)))


def test_a_missing_binary_names_its_package():
    program = Program("x", ["/nonexistent/patroni"], "patroni", Phase.DATABASE, "127.0.0.1", 1)
    with pytest.raises(StackError, match=r"/nonexistent/patroni: install patroni"):
        check_binaries([program])


def test_database_files_move_out_of_a_directory_postgres_cannot_reach(tmp_path):
    """tmp_path sits under /tmp/pytest-of-root (mode 700), like a checkout under /root."""
    if os.geteuid() != 0:
        pytest.skip("only root runs the database as another user")
    hidden = tmp_path / "hidden"
    hidden.mkdir(mode=0o700)
    layout = Layout.create(hidden / "state", instances=1)
    assert layout.db_user == "postgres"
    assert layout.db_dir.parent == SHARED_DB_ROOT
    assert traversable_by("postgres", SHARED_DB_ROOT) or not SHARED_DB_ROOT.exists()


def test_bad_port_settings_are_named():
    from local.layout import LayoutError

    with pytest.raises(LayoutError, match="PYNOMALY_LOCAL_PORT_LB='x' is not an integer"):
        ports_from_env({"PYNOMALY_LOCAL_PORT_LB": "x"})


def test_a_missing_server_account_is_named_with_its_fix():
    from local.layout import LayoutError, check_accounts

    check_accounts(["root"])  # present: nothing said
    with pytest.raises(LayoutError, match=r"no account pynomaly-nobody-\w+ .*scripts/setup installs them"):
        check_accounts(["root", "pynomaly-nobody-x1"])


def test_the_dead_letter_alarm_fires_on_one_sample_of_the_queue_stand_in():
    """The local twin of the CloudWatch DLQ alarm (one evaluation period): no minute of grace."""
    from pynomaly_ops import metrics

    (dlq,) = [r for r in _rendered_rules() if r["labels"]["alarm_key"] == "dlq_not_empty.warning"]
    assert dlq["for"] == "0s"
    assert dlq["expr"] == f'max({metrics.QUEUE_VISIBLE}{{role="{metrics.DEAD_LETTER_QUEUE}"}}) > 0'


def test_a_stack_recorded_before_a_port_existed_gets_it_at_its_offset(tmp_path, monkeypatch):
    import json

    from local.layout import DEFAULT_PORTS

    monkeypatch.setenv("PYNOMALY_LOCAL_PORT_OFFSET", "2000")
    layout = Layout.create(tmp_path / "s", instances=1)
    layout.save()
    path = layout.state_dir / Layout.FILE
    recorded = json.loads(path.read_text())
    del recorded["ports"]["moto_metrics"]
    path.write_text(json.dumps(recorded))
    assert Layout.load(layout.state_dir).ports["moto_metrics"] == DEFAULT_PORTS["moto_metrics"] + 2000
