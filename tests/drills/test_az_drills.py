"""The AZ drills' contract with the stack they need: zones in network namespaces (``local up --zones``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drills import catalog, runner
from local.layout import Layout
from local.stack import StackError, open_stack


@pytest.mark.parametrize("drill", catalog.DRILLS, ids=lambda d: d.name)
def test_a_drill_needs_zones_when_its_experiment_says_so(drill):
    """`chaos run` users read the experiment, the runner reads the catalogue: the two must agree."""
    extensions = json.loads(Path(drill.experiment).read_text()).get("extensions", [])
    says = any(e.get("needs") == "zones" for e in extensions)
    assert says == drill.needs_zones


def test_the_az_drills_are_the_ones_that_need_zones():
    assert [d.name for d in catalog.DRILLS if d.needs_zones] == ["az-partition", "az-power-loss"]


def test_only_the_partition_counts_split_brain_writes():
    """A zone without power runs nothing that could write; a cut-off one still runs its old primary."""
    split = {d.name: [o.measured for o in d.objectives if "split-brain" in o.measured] for d in catalog.AZ_DRILLS}
    assert split == {
        "az-partition": ["split-brain writes acknowledged", "split-brain writes surviving"],
        "az-power-loss": [],
    }


def _unzoned_stack(tmp_path: Path) -> Path:
    Layout.create(tmp_path / "stack", instances=3).save()
    return tmp_path / "stack"


def test_a_named_az_drill_refuses_a_stack_without_zones(tmp_path, monkeypatch):
    """Nothing starts: the message says how to get a stack with zones."""
    state = _unzoned_stack(tmp_path)
    monkeypatch.setenv("PYNOMALY_LOCAL_STATE", str(state))  # run() sets it for the experiments: undone after
    said: list[str] = []
    with pytest.raises(StackError, match=r"local down --purge.*local up --zones"):
        runner.run([catalog.get("az-partition")], said.append, state, tmp_path / "reports")
    assert not (tmp_path / "reports").exists() and said == []


def test_a_zoned_stack_is_not_opened_as_one_without(tmp_path):
    state = tmp_path / "zoned"
    Layout.create(state, instances=3, zoned=True).save()
    with pytest.raises(StackError, match=r"has zones.*local down --purge.*then `local up`$"):
        open_stack(state, zoned=False)
    assert open_stack(state).layout.zoned  # no shape asked: the recorded one
