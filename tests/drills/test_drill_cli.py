"""``pynomaly-ops drill``, through the console script's entry point in a process of its own: usage errors exit 2
naming the drills; ``list`` shows every drill with its objectives' limits from the numbers file.

The runner is replaced in that process by one that prints the drills it was given and exits 99, so a command
that wrongly goes on never brings a local stack up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from drills import catalog
from pynomaly_ops.baselines import DEFAULT_PATH, PATH_ENV

RAN = 99
NO_RUNNER = f"""
import sys
import drills.runner
def run(drills, *args, **kwargs):
    print("would run:", *[d.name for d in drills])
    sys.exit({RAN})
drills.runner.run = run
sys.argv = ["pynomaly-ops", *sys.argv[1:]]
from pynomaly_cli.entry import main
main()
"""


def _drill(*args: str, env: dict[str, str] | None = None, state: Path | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, **(env or {})}
    if state is not None:  # where a run would look for (or bring up) the local stack
        environment["PYNOMALY_LOCAL_STATE"] = str(state)
    cmd = [sys.executable, "-c", NO_RUNNER, "drill", *args]
    return subprocess.run(cmd, env=environment, capture_output=True, text=True, timeout=120)


def _names_listed(text: str) -> list[str]:
    return text.split("the drills: ", 1)[1].split()[0 : len(catalog.DRILLS)]


def test_an_unknown_drill_exits_2_naming_the_drills(tmp_path):
    proc = _drill("run", "nope", state=tmp_path / "state")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "unknown drill 'nope'" in proc.stderr
    assert [n.rstrip(",") for n in _names_listed(proc.stderr)] == [d.name for d in catalog.DRILLS]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "state").exists()  # refused before any stack was opened


def test_an_unknown_drill_among_known_ones_runs_none(tmp_path):
    proc = _drill("run", "instance-loss", "nope", state=tmp_path / "state")
    assert proc.returncode == 2 and "unknown drill 'nope'" in proc.stderr
    assert not (tmp_path / "state").exists()


def test_run_needs_names_or_all_but_not_both(tmp_path):
    for args in ([], ["--all", "cache-flush"]):
        proc = _drill("run", *args, state=tmp_path / "state")
        assert proc.returncode == 2, (args, proc.stdout + proc.stderr)
        assert "name drills or give --all" in proc.stderr
        assert [n.rstrip(",") for n in _names_listed(proc.stderr)] == [d.name for d in catalog.DRILLS]
    assert not (tmp_path / "state").exists()


def test_named_drills_or_all_reach_the_runner_in_order(tmp_path):
    """The control for the tests above: what they refuse is refused by the command, not by the stand-in."""
    named = _drill("run", "cache-flush", "instance-loss", state=tmp_path / "state")
    assert named.returncode == RAN, named.stderr
    assert named.stdout.strip() == "would run: cache-flush instance-loss"
    every = _drill("run", "--all", state=tmp_path / "state")
    assert every.returncode == RAN, every.stderr
    assert every.stdout.strip() == "would run: " + " ".join(d.name for d in catalog.DRILLS)


def _list_rows(stdout: str) -> dict[str, list[str]]:
    """The table's objectives cells, grouped by drill."""
    rows: dict[str, list[str]] = {}
    current = None
    for line in stdout.splitlines():
        if not line.startswith("│"):
            continue
        name, _procedure, objectives, _targets = (cell.strip() for cell in line.strip("│").split("│"))
        if name:
            current = name
            rows[current] = []
        assert current is not None
        if objectives:
            rows[current].append(objectives)
    return rows


def test_list_shows_every_drill_with_its_objectives_limits_from_the_numbers_file(tmp_path):
    numbers = yaml.safe_load(DEFAULT_PATH.read_text())
    numbers["recovery"]["database_failover"]["rto_s"] = 95
    numbers["recovery"]["cache_failover"]["rto_s"] = 42
    numbers["thresholds"]["error_rate_percent"]["warning"] = 2.5
    copy = tmp_path / "baselines.yaml"
    copy.write_text(yaml.safe_dump(numbers))
    proc = _drill("list", env={PATH_ENV: str(copy)})
    assert proc.returncode == 0, proc.stderr
    rows = _list_rows(proc.stdout)
    assert list(rows) == [d.name for d in catalog.DRILLS]
    assert rows["database-failover"] == [
        "write RTO: first failed to first acknowledged write (s) <= 95",
        "RPO: acknowledged writes lost == 0",
        "old primary back as synchronous standby (s) <= 95",
    ]
    assert rows["cache-failover"] == ["Sentinel promotes a replica (s) <= 42", "error rate users saw (%) <= 2.5"]
    assert rows["instance-loss"] == [
        "error rate users saw (%) <= 2.5",
        "capacity back to the normal count (s) <= 60 (local), 600 (aws)",
    ]
    assert rows["cache-flush"] == ["error rate users saw (%) <= 2.5", "p95 back under the warning level (s) <= 60"]
    assert rows["traffic-spike"] == [
        "p95 back under the warning level after the fault (s) <= 120",
        "error rate users saw (%) <= 2.5",
    ]
