"""Helpers for the platform tests (reading a Rendering)."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from pynomaly_cli.offline import PLACEHOLDERS, SECRET, Rendering, Resource, render
from pynomaly_ops import baselines
from pynomaly_ops import settings as stack_settings

ONCALL = ["oncall@example.com", "sre-lead@example.com"]  # alarm e-mails in a test variant
STACKS = sorted(p.stem.removeprefix("Pulumi.") for p in stack_settings.STACKS_DIR.glob("Pulumi.*.yaml"))
# The platform tiers alone (a cheaper rendering, for what the cluster does not change).
NO_CLUSTER = {"pynomaly:cluster.enabled": False}
# dev with the maintenance switch on, alarm e-mails, single-AZ (allowed outside prod) and no cluster.
DEV_VARIANT = {
    "pynomaly:lb.maintenance_mode": True,
    "pynomaly:alarms.emails": ONCALL,
    "pynomaly:db.multi_az": False,
    **NO_CLUSTER,
}

# (stack, overrides, the key the message must name, what it must say)
BAD_SETTINGS = [
    ("dev", {"pynomaly:db.multiaz": False}, "pynomaly:db.multiaz", "unknown setting"),
    ("staging", {"pynomaly:db.allocated_storage_gb": 600}, "pynomaly:db.allocated_storage_gb", "min > max"),
    ("prod", {"pynomaly:db.multi_az": False}, "pynomaly:db.multi_az", "must stay true"),
    ("prod", {"pynomaly:db.deletion_protection": False}, "pynomaly:db.deletion_protection", "must stay true"),
    ("prod", {"pynomaly:lb.deletion_protection": False}, "pynomaly:lb.deletion_protection", "must stay true"),
    ("dev", {"pynomaly:lb.certificate_arn": ""}, "pynomaly:lb.certificate_arn", "pulumi config set"),
    # a private endpoint that `pulumi up` could not reach (the first deploy above all): refused, with the way out
    ("prod", {"pynomaly:cluster.runner_in_vpc": False}, "pynomaly:cluster.public_access_cidrs", "two phases"),
]
# What an operator must set, as settings.build takes it (keys without the project prefix).
REQUIRED = {key.removeprefix("pynomaly:"): value for key, value in PLACEHOLDERS.items()}
# Phase one of a private cluster's first deploy: the AWS resources and the cluster, no Kubernetes resource.
PHASE_ONE = {"pynomaly:cluster.runner_in_vpc": False, "pynomaly:cluster.kubernetes": False}

# Each rendering runs in its own child process; running several at once
# keeps the suite short on a multi-core machine.
_pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2))
_runs: dict[str, Future] = {}


def submit(stack: str, overrides: dict | None = None, env: dict[str, str] | None = None) -> Future:
    """Start (once) the rendering of ``stack`` with ``overrides`` and ``env``."""
    key = json.dumps([stack, overrides or {}, env or {}], sort_keys=True)
    if key not in _runs:
        _runs[key] = _pool.submit(render, stack, overrides, env=env)
    return _runs[key]


def rendered(stack: str, overrides: dict | None = None, env: dict[str, str] | None = None) -> Rendering:
    """The rendering (raises the program's OfflineError if it failed)."""
    return submit(stack, overrides, env).result()


def change_numbers(data: dict) -> None:
    """Edits to a copy of baselines.yaml; the tests expect their effect."""
    t = data["thresholds"]
    t["cpu_percent"] = {"warning": 70, "critical": 90}
    t["response_time_p95_ms"] = {"warning": 400, "critical": 800}
    t["error_rate_percent"] = {"warning": 2, "critical": 10}
    data["app_alarms"]["processing_lag_s"] = 240
    data["app_alarms"]["inference_time_s"] = 2
    data["scaling"]["instances_normal"] = 4
    data["scaling"]["instances_high_load"] = 8
    data["scaling"]["target_cpu_percent"] = 60
    data["database"]["max_connections"] = 300
    data["abuse"]["rate_headroom"] = 5


def warning_equals_critical(data: dict) -> None:
    data["thresholds"]["cpu_percent"]["warning"] = data["thresholds"]["cpu_percent"]["critical"]


def one(r: Rendering, type_token: str, name: str | None = None) -> Resource:
    found = [x for x in r.of_type(type_token) if name is None or x.name == name]
    assert len(found) == 1, f"expected one {type_token} {name or ''}, found {[x.name for x in found]}"
    return found[0]


def inputs(r: Rendering, name: str) -> dict[str, Any]:
    return r.named(name).plain_inputs


def state(r: Rendering, name: str) -> dict[str, Any]:
    return r.named(name).state


def rid(name: str) -> str:
    """The id the mocks give a resource: what other resources' inputs hold."""
    return f"{name}-id"


def policy(resource_inputs: dict[str, Any], key: str = "policy") -> dict[str, Any]:
    return json.loads(resource_inputs[key])


def statements(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc["Statement"]


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def write_baselines(tmp_path: Path, change) -> Path:
    """A copy of baselines.yaml with ``change(data)`` applied."""
    data = yaml.safe_load(baselines.DEFAULT_PATH.read_text())
    change(data)
    path = tmp_path / "baselines.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --- what the fleet's instances and the secrets tests read ---------------------------------------
def user_data(r, stack) -> str:
    return base64.b64decode(inputs(r, f"{stack}-fleet-lt")["userData"]).decode()


def heredoc(script: str, marker: str) -> str:
    return re.search(rf"<<'{marker}'\n(.*?)\n{marker}\n", script, re.S).group(1)


def secret_values(value: Any, inside: bool = False) -> set[str]:
    """Every string found under a secret marker."""
    if isinstance(value, dict):
        if set(value) == {SECRET}:
            return secret_values(value[SECRET], True)
        return set().union(*(secret_values(v, inside) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(secret_values(v, inside) for v in value)) if value else set()
    return {value} if inside and isinstance(value, str) else set()


def plain_strings(value: Any) -> list[str]:
    """Every string outside secret markers."""
    if isinstance(value, dict):
        if set(value) == {SECRET}:
            return []
        return [s for v in value.values() for s in plain_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in plain_strings(v)]
    return [value] if isinstance(value, str) else []


INSTANCE_ID = "i-0123456789abcdef0"  # what IMDS answers in the boot-script tests


def env_file(script: str) -> str:
    """The environment file the user data leaves behind, with the instance id IMDS would give."""
    appended = re.search(r'echo "(\w+)=\$instance_id" >> ', script)
    assert appended, "the user data must append the instance id"
    return heredoc(script, "ENV") + f"\n{appended.group(1)}={INSTANCE_ID}\n"


def parse_env(text: str, tmp_path: Path) -> dict[str, str]:
    """Read the file the way a shell does (systemd's EnvironmentFile quoting is the same for these values)."""
    path = tmp_path / "pynomaly.env"
    path.write_text(text)
    dump = subprocess.run(
        ["env", "-i", "bash", "-c", 'set -a; . "$1"; env -0', "_", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    env = dict(item.split("=", 1) for item in dump.split("\0") if item)
    return {k: v for k, v in env.items() if k not in {"PWD", "SHLVL", "_"}}
