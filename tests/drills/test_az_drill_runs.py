"""The AZ drills for real, as root: a stack with zones in network namespaces of its own, both drills run by
the runner as `drill run az-partition az-power-loss` does, both phases of each measured, nothing left."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from drills import catalog, runner
from local.layout import PORT_OFFSET_ENV, STATE_ENV, Layout
from local.stack import open_stack

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="zones are network namespaces: root only"),
]
PORT_OFFSET = "2000"  # away from the local-stack tests' (1000), the drill tests' (1500) and a developer's


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout


def test_the_az_drills_pass_on_a_stack_with_zones(tmp_path, monkeypatch):
    state = tmp_path / "state"
    monkeypatch.setenv(PORT_OFFSET_ENV, PORT_OFFSET)
    monkeypatch.setenv(STATE_ENV, str(state))
    drills = [catalog.get("az-partition"), catalog.get("az-power-loss")]
    try:
        outcomes = runner.run(drills, print, state, tmp_path / "reports")
    finally:
        layout = Layout.load(state)
        if layout is not None:
            open_stack(state, print).down(purge=True)
    assert layout is not None and layout.zoned  # made with zones, as none existed
    assert f"pynomaly-{layout.net_id}-" not in _namespaces()  # down removes the zones
    by_name = {o.drill: o for o in outcomes}
    for outcome in outcomes:
        misses = [o for o in outcome.summary["objectives"] if not o["met"]]
        assert outcome.passed, (outcome.drill, outcome.summary["problems"], misses)
    for name in ("az-partition", "az-power-loss"):
        m = by_name[name].summary["measurements"]
        # the loss: a real failover, every acknowledged write kept
        assert m["new database primary (s)"] > 0 and m["write_outage_s"] > 0 and m["writes_lost"] == 0
        # the return: measured, not merely absent
        assert m["zone rejoined (s)"] > 0 and m["leader changes on heal"] == 0
        assert m["write outage after the zone came back (s)"] == 0
        assert Path(by_name[name].run_dir, "report.md").read_text().count("came back") >= 1
    partition = by_name["az-partition"].summary["measurements"]
    assert partition["split-brain writes acknowledged"] == 0 and partition["split-brain writes surviving"] == 0
    writer = next(e for e in partition["events"] if e["event"] == "split-brain writes")
    assert writer["detail"]["attempts_during_cut"] > 0  # the old primary was written to, and refused
