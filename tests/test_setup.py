"""scripts/setup installs what the local stack runs."""

from __future__ import annotations

import subprocess
from pathlib import Path

from local.programs import PATRONI, PATRONI_VENV, PATRONI_VERSION

ROOT = Path(__file__).resolve().parents[1]


def test_setup_installs_the_patroni_the_stack_runs():
    """The version is typed once (local/programs.py); setup reads it from there."""
    setup = (ROOT / "scripts" / "setup").read_text().splitlines()
    line = next(x for x in setup if x.startswith("patroni_version="))
    read = subprocess.run(["bash", "-c", f"{line}; echo $patroni_version"], cwd=ROOT, capture_output=True, text=True)
    assert read.stdout.strip() == PATRONI_VERSION
    assert f"{PATRONI_VENV}/bin/patroni" == PATRONI and PATRONI_VENV.name == f"patroni-{PATRONI_VERSION}"


def test_patroni_has_the_conditional_leader_key_update():
    """3.0.2 (Debian 12) puts the etcd3 leader key unconditionally; 3.0.3 made it a transaction
    (patroni/patroni#2689). Without it a healed zone's old primary takes the key back."""
    assert tuple(map(int, PATRONI_VERSION.split("."))) >= (3, 0, 3)
