"""One local stack per test session, on its own ports and state directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from local.layout import PORT_OFFSET_ENV, STATE_ENV, Layout
from local.stack import Stack
from pynomaly_ops.outputs import StackOutputs

# Away from a developer's stack (offset 0) and from the ephemeral ports other
# suites pick at run time.
TEST_PORT_OFFSET = "1000"


@dataclass
class RunningStack:
    state_dir: Path
    outputs: StackOutputs
    up_seconds: float
    env: dict[str, str]

    @property
    def stack(self) -> Stack:
        # Re-read each time: CLI commands (scale) change the recorded layout.
        return Stack(Layout.load(self.state_dir), say=lambda _: None)

    @property
    def layout(self) -> Layout:
        return self.stack.layout


def cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pynomaly_cli.cli", "local", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, check=check, timeout=180)


@pytest.fixture(scope="session")
def local_env(tmp_path_factory) -> dict[str, str]:
    state = tmp_path_factory.mktemp("local-stack") / "state"
    return os.environ | {STATE_ENV: str(state), PORT_OFFSET_ENV: TEST_PORT_OFFSET}


@pytest.fixture(scope="session")
def running(local_env) -> RunningStack:
    started = time.monotonic()
    result = cli(local_env, "up", check=False)
    up_seconds = time.monotonic() - started
    if result.returncode != 0:
        cli(local_env, "down", "--purge", check=False)
        pytest.fail(f"local up failed:\n{result.stderr}")
    print(f"\nlocal up from cold: {up_seconds:.1f}s")
    outputs = StackOutputs.model_validate(json.loads(cli(local_env, "outputs", "--json").stdout))
    yield RunningStack(Path(local_env[STATE_ENV]), outputs, up_seconds, local_env)
    cli(local_env, "down", "--purge", check=False)
