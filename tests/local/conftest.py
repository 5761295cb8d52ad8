"""One local stack per test session, on its own ports and state directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from local.layout import PORT_OFFSET_ENV, STATE_ENV, Layout
from local.procs import listeners, stack_pids
from local.programs import FLEET_GROUP
from local.stack import Stack, bound_ports
from local.wiring import AWS_ENV
from pynomaly_ops.alarms import Target, alarm_numbers, catalogue, for_target, number_at
from pynomaly_ops.baselines import SEVERITIES, Level, load
from pynomaly_ops.outputs import StackOutputs

# Away from a developer's stack (offset 0) and from the ephemeral ports other
# suites pick at run time.
TEST_PORT_OFFSET = os.environ.get("PYNOMALY_TEST_PORT_OFFSET", "1000")  # another suite running beside this one


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

    @property
    def state(self) -> str:
        """The state directory as local.probes and local.faults take it."""
        return str(self.state_dir)


def aws(running: RunningStack, service: str) -> Any:
    """A boto3 client of the stack's SQS/S3 stand-in (moto)."""
    return boto3.client(
        service,
        endpoint_url=running.outputs.aws_endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    )


def api(running: RunningStack) -> httpx.Client:
    """The service through the load balancer, with the stack's API key."""
    return httpx.Client(
        base_url=running.outputs.load_balancer_url,
        headers={"Authorization": f"Bearer {running.outputs.api_key}"},
        timeout=10,
    )


def instances_ready(running: RunningStack) -> list[dict[str, Any]]:
    """/ready of every API instance, asked on its own port: the load balancer does not route /ready."""
    fleet = [p for p in running.stack.programs() if p.group == FLEET_GROUP]
    return [httpx.get(f"http://{p.address}:{p.port}/ready", timeout=10).json() for p in fleet]


def assert_covers_every_threshold(rendered_rules: list[dict]) -> None:
    """Every alarm number of the file (each warning/critical pair, each app alarm) has its rule with that value,
    and every catalogue entry for the local Prometheus is deployed under its catalogue name."""
    b = load()
    rendered = {r["labels"]["alarm_key"]: r for r in rendered_rules}
    by_baseline = {r["labels"]["baseline"]: r for r in rendered_rules}
    for number in alarm_numbers(b):
        value = number_at(b, number)
        pairs = (
            {f"{number}.{sev}": value.at(sev) for sev in SEVERITIES} if isinstance(value, Level) else {number: value}
        )
        for baseline, threshold in pairs.items():
            rule = by_baseline[baseline]
            assert float(rule["labels"]["threshold"]) == threshold
            assert rule["expr"].endswith(f"> {threshold:g}")
    for alarm in for_target(catalogue(b), Target.PROMETHEUS):
        assert rendered[alarm.key]["alert"] == alarm.name(Target.PROMETHEUS, "local")


def assert_down_leaves_nothing_running(env: dict[str, str]) -> None:
    """`local down` ends every process of the stack and frees every port it listened on."""
    stack = Stack(Layout.load(Path(env[STATE_ENV])), say=lambda _: None)
    ports = {(a, p) for _, a, p in bound_ports(stack.layout, stack.programs())}
    cli(env, "down")
    assert stack_pids(stack.layout) == {}
    assert [ap for ap in listeners() if ap in ports] == []


def cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pynomaly_cli.cli", "local", *args]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=180)
    if check and result.returncode != 0:  # say why: a CalledProcessError hides the command's own message
        raise AssertionError(f"`local {' '.join(args)}` exited {result.returncode}:\n{result.stderr[-4000:]}")
    return result


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
    # --show-secrets: the tests use the API key and the DSN (the command masks them otherwise)
    outputs = StackOutputs.model_validate(json.loads(cli(local_env, "outputs", "--json", "--show-secrets").stdout))
    yield RunningStack(Path(local_env[STATE_ENV]), outputs, up_seconds, local_env)
    # Checked here, after every test whatever the order, rather than by a test that must run last.
    try:
        assert_down_leaves_nothing_running(local_env)
    finally:
        cli(local_env, "down", "--purge", check=False)
