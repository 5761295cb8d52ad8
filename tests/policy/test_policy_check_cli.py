"""`pynomaly-ops policy check --stack NAME [--json]`: exit 0 with no mandatory violation, 1 with one, 2 for an
unknown stack; a table by rule and resource, or JSON."""

from __future__ import annotations

import json
import subprocess
import sys

from policy_helpers import changed
from typer.testing import CliRunner

from pynomaly_cli import policy_check
from pynomaly_cli.cli import app


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pynomaly_cli.entry", "policy", "check", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_stack_file_passes_with_exit_0():
    proc = _cli("--stack", "dev", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["stack"], report["mandatory"], report["violations"]) == ("dev", 0, [])


def test_an_unknown_stack_is_a_usage_error():
    proc = _cli("--stack", "nope")
    assert proc.returncode == 2
    assert "no stack file stacks/Pulumi.nope.yaml; stacks: dev, prod, staging" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_mandatory_violation_exits_1_with_its_rule_resource_and_fix(prod, monkeypatch):
    unsafe = changed(prod, "prod-database-primary", publiclyAccessible=True)
    monkeypatch.setattr(policy_check, "render", lambda stack: unsafe)
    result = CliRunner().invoke(app, ["policy", "check", "--stack", "prod"])
    assert result.exit_code == 1, result.output
    row = next(line for line in result.output.splitlines() if "rds-not-public" in line)
    assert "mandatory" in row and "prod-database-primary" in row
    assert "publicly_accessible=False" in result.output
    assert "FAIL stack prod: 1 mandatory and 0 advisory violation(s)" in result.output

    as_json = CliRunner().invoke(app, ["policy", "check", "--stack", "prod", "--json"])
    assert as_json.exit_code == 1
    (violation,) = json.loads(as_json.stdout)["violations"]
    assert (violation["rule"], violation["level"], violation["resource"]) == (
        "rds-not-public",
        "mandatory",
        "prod-database-primary",
    )
