"""The pack as the Pulumi CLI runs it: its own process (`python -m pulumi.policy <engine> policy/`, what
pulumi-analyzer-policy-python starts), serving the analyzer protocol, with the stack's configuration in
PULUMI_CONFIG; and with nothing but the core and pulumi-policy installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy.proxy import UNKNOWN_BOOLEAN_VALUE

from policy.pack import POLICIES
from policy.resource_types import RDS_INSTANCE
from pynomaly_cli.offline import PLACEHOLDERS, offline_config
from pynomaly_ops import REPO_ROOT
from pynomaly_ops.settings import from_stack_file

PACK = REPO_ROOT / "policy"


def test_the_pack_needs_no_cloud_sdk_and_no_infra():
    """policy/requirements.txt installs the core and pulumi-policy only: the pack must import with those."""
    blocked = ("pulumi_aws", "pulumi_kubernetes", "pulumi_random", "infra", "pynomaly_cli")
    code = f"import sys\nfor m in {blocked!r}: sys.modules[m] = None\nimport policy.pack, policy.engine\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    config, _, _ = offline_config("prod")
    env = {**os.environ, "PULUMI_CONFIG": json.dumps(config)}
    pack = subprocess.Popen(
        [sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:0", str(PACK)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=PACK,
    )
    try:
        port = pack.stdout.readline().strip()  # the analyzer's first line: its port
        assert port.isdigit(), pack.stderr.read()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        pack.kill()
        pack.wait()


def _properties(props: dict) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(props)
    return message


def _analyze(stub: analyzer_pb2_grpc.AnalyzerStub, props: dict) -> list[analyzer_pb2.AnalyzeDiagnostic]:
    request = analyzer_pb2.AnalyzeRequest(
        type=RDS_INSTANCE,
        properties=_properties(props),
        urn=f"urn:pulumi:prod::pynomaly::{RDS_INSTANCE}::prod-database-primary",
        name="prod-database-primary",
    )
    return list(stub.Analyze(request).diagnostics)


def test_the_cli_sees_every_rule_with_its_level(analyzer):
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    levels = {p.name: analyzer_pb2.EnforcementLevel.Name(p.enforcementLevel) for p in info.policies}
    assert levels == {p.name: p.enforcement_level.name for p in POLICIES}


def test_the_cli_gets_the_same_violations(analyzer):
    safe = {
        "storageEncrypted": True,
        "publiclyAccessible": False,
        "multiAz": True,
        "deletionProtection": True,
        "backupRetentionPeriod": 35,
        "performanceInsightsEnabled": True,
        "monitoringInterval": 15,
        "tags": from_stack_file("prod", PLACEHOLDERS).tags,
    }
    assert _analyze(analyzer, safe) == []
    diagnostics = _analyze(analyzer, {**safe, "publiclyAccessible": True, "multiAz": False})
    found = {(d.policyName, analyzer_pb2.EnforcementLevel.Name(d.enforcementLevel)) for d in diagnostics}
    assert found == {("rds-not-public", "MANDATORY"), ("prod-rds-multi-az", "MANDATORY")}
    assert all("prod-database-primary: " in d.message and ". Fix: " in d.message for d in diagnostics)


def test_an_unknown_value_in_a_preview_is_no_violation(analyzer):
    safe_but_unknown = {"storageEncrypted": UNKNOWN_BOOLEAN_VALUE, "publiclyAccessible": False}
    diagnostics = [d for d in _analyze(analyzer, safe_but_unknown) if d.policyName == "rds-storage-encrypted"]
    (diagnostic,) = diagnostics
    assert diagnostic.enforcementLevel == analyzer_pb2.ADVISORY
    assert "can't be known during preview" in diagnostic.message
