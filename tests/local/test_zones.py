"""The zones' network on its own, as root: made, cut, mended and removed for real, and removal complete
when it returns (a later `down` or `up --zones` must not meet what an earlier removal left behind)."""

from __future__ import annotations

import os
import subprocess

import pytest

from local.layout import PORT_OFFSET_ENV, ZONE_NAMES, Layout
from local.stack import open_stack
from local.zones import SYS_NET, ZoneError, Zones

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="zones are network namespaces: root only"),
]
PORT_OFFSET = "2100"  # a subnet of its own: away from the AZ drill test's (2000) and a developer's


@pytest.fixture
def zones(tmp_path, monkeypatch):
    monkeypatch.setenv(PORT_OFFSET_ENV, PORT_OFFSET)
    layout = Layout.create(tmp_path / "state", instances=3, zoned=True)
    layout.save()
    net = Zones(layout)
    try:
        yield net
    finally:
        net.remove()


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout


def test_a_cut_zone_is_cut_and_mends(zones):
    zones.create()
    assert [zones.link_state(z) for z in ZONE_NAMES] == ["up", "up", "up"]
    zones.cut("b")
    assert [zones.link_state(z) for z in ZONE_NAMES] == ["up", "cut", "up"]
    zones.heal("b")
    assert zones.link_state("b") == "up"


def test_removal_is_complete_when_it_returns(zones):
    """The CI failure this guards: `netns del` frees a namespace's veth later, the lingering host end read as
    a cut zone, and the second `down` tried to mend a zone that no longer existed."""
    zones.create()
    zones.cut("a")
    removed = zones.remove()
    assert sorted(removed) == sorted([zones.namespace(z) for z in ZONE_NAMES] + [zones.bridge])
    assert [zones.link_state(z) for z in ZONE_NAMES] == ["absent"] * 3
    assert not any((SYS_NET / zones.host_link(z)).exists() for z in ZONE_NAMES)
    assert not (SYS_NET / zones.bridge).exists() and f"pynomaly-{zones.net_id}-" not in _namespaces()
    assert zones.remove() == []  # idempotent
    with pytest.raises(ZoneError, match="is the stack up with --zones"):
        zones.heal("a")


def test_a_stack_with_zones_goes_down_twice(zones):
    """`drill run` takes down a stack it brought up; an operator's `local down --purge` after it must work."""
    zones.create()
    stack = open_stack(zones.layout.state_dir, lambda _: None)
    stack.down()
    stack.down(purge=True)
    assert not (SYS_NET / zones.bridge).exists()
    assert not zones.layout.state_dir.joinpath(Layout.FILE).exists()
