"""Which stack: its saved outputs or the Pulumi CLI's, the region, and errors that name the fix."""

from __future__ import annotations

import ast
import json
import os
import stat
from typing import Any

import aws_testkit as kit
import pytest

from aws_target import faults, probes
from aws_target.outputs import OUTPUTS_ENV, STACK_ENV
from aws_target.target import resolve
from pynomaly_ops import REPO_ROOT
from pynomaly_ops import outputs as keys
from pynomaly_ops.outputs import StackOutputs
from pynomaly_ops.stack_outputs import OutputsError


def _placeholder(key: str) -> Any:
    """A value of the type StackOutputs declares for ``key`` (a string for the keys it leaves as extras)."""
    field = StackOutputs.model_fields.get(key)
    return type(field.default)() if field and isinstance(field.default, dict | list) else f"value-of-{key}"


def _document(**changes: Any) -> dict[str, Any]:
    """``pulumi stack output --json`` built from pynomaly_ops/outputs.py's keys (none of the local stack's)."""
    values = {k: _placeholder(k) for k in kit.output_keys() - kit.LOCAL_ONLY}
    values |= {keys.REGION: kit.REGION, keys.LOAD_BALANCER_URL: "https://drill.example.com"}
    return {k: v for k, v in (kit.outputs_document(values) | changes).items() if v is not None}


def test_a_saved_document_of_every_output_key_is_read_with_the_stacks_region(tmp_path):
    path = kit.write_outputs(tmp_path / "outputs.json", _document())
    t = resolve(outputs=path)
    assert t.region == kit.REGION != os.environ["AWS_DEFAULT_REGION"]  # the stack's region, not boto3's default
    assert t.value(keys.DB_PRIMARY_IDENTIFIER) == f"value-of-{keys.DB_PRIMARY_IDENTIFIER}"
    assert probes.stack_outputs(outputs=path)[keys.QUEUE_URL] == f"value-of-{keys.QUEUE_URL}"


def test_the_environment_names_the_outputs_file_for_an_experiment(tmp_path, monkeypatch):
    monkeypatch.setenv(OUTPUTS_ENV, kit.write_outputs(tmp_path / "outputs.json", _document()))
    assert resolve().outputs.queue_url == f"value-of-{keys.QUEUE_URL}"


def test_a_missing_file_says_how_to_save_one(tmp_path):
    with pytest.raises(OutputsError, match=r"no outputs file .*pulumi stack output --json --stack NAME > outputs.json"):
        resolve(outputs=str(tmp_path / "nowhere.json"))


def test_a_document_without_a_required_output_names_it(tmp_path):
    path = kit.write_outputs(tmp_path / "outputs.json", _document(queue_url=None))
    with pytest.raises(OutputsError, match=r"not a stack's outputs.*queue_url"):
        resolve(outputs=path)


def test_an_output_the_library_needs_names_its_export_and_pulumi_up(tmp_path):
    """A stack deployed before the AWS fault library exports no database identifier: the fault says so."""
    path = kit.write_outputs(tmp_path / "outputs.json", _document(db_primary_identifier=None))
    with pytest.raises(OutputsError, match=r"no 'db_primary_identifier'.*keys\.DB_PRIMARY_IDENTIFIER.*pulumi up"):
        faults.kill_database_primary(outputs=path)


def test_no_region_anywhere_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    path = kit.write_outputs(tmp_path / "outputs.json", _document(region=None))
    with pytest.raises(OutputsError, match=r"no region .*'region'.*AWS_REGION"):
        resolve(outputs=path)
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    assert resolve(outputs=path).region == "ap-south-1"


def test_no_stack_named_lists_the_ways_to_name_one():
    with pytest.raises(OutputsError, match=rf"stack=NAME.*outputs=FILE.*\${STACK_ENV}.*\${OUTPUTS_ENV}"):
        resolve()


def test_without_the_pulumi_cli_a_saved_file_is_the_way(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(OutputsError, match=r"no Pulumi CLI .*stack prod.*--stack prod > outputs.json.*--outputs"):
        resolve(stack="prod")


def _fake_pulumi(directory, document: dict, exit_code: int = 0):
    """A `pulumi` that records its arguments and working directory and prints ``document``."""
    script = directory / "pulumi"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$PWD $*" > {directory}/called\n'
        f"cat <<'JSON'\n{json.dumps(document)}\nJSON\n"
        f"[ {exit_code} = 0 ] || echo 'error: no stack named prod' >&2\nexit {exit_code}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_the_pulumi_cli_is_asked_for_the_stacks_outputs_in_the_project(tmp_path, monkeypatch):
    _fake_pulumi(tmp_path, _document())
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert resolve(stack="staging").value(keys.REDIS_REPLICATION_GROUP_ID).startswith("value-of-")
    assert (tmp_path / "called").read_text().split() == [
        str(REPO_ROOT),
        "stack",
        "output",
        "--json",
        "--stack",
        "staging",
    ]


def test_a_failing_pulumi_cli_is_quoted(tmp_path, monkeypatch):
    _fake_pulumi(tmp_path, {}, exit_code=255)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with pytest.raises(OutputsError, match="pulumi stack output --stack prod failed: error: no stack named prod"):
        resolve(stack="prod")


# --- what the library shares with the Pulumi program, which it may not import -----------------------------------
def _constant(path: str, name: str):
    tree = ast.parse((REPO_ROOT / path).read_text())
    value = next(n.value for n in ast.walk(tree) if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == name)
    return ast.literal_eval(value)


def test_the_worker_unit_is_the_one_the_instances_run():
    from aws_target.commands import WORKER_UNIT

    assert WORKER_UNIT in _constant("infra/app_fleet.py", "SERVICE_UNITS")


NEEDED = {"REGION", "DB_PRIMARY_IDENTIFIER", "REDIS_REPLICATION_GROUP_ID", "HTTPS_LISTENER_ARN"}


def test_the_program_exports_what_the_aws_library_reads():
    tree = ast.parse((REPO_ROOT / "infra" / "__main__.py").read_text())
    exported = {
        n.args[0].attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and ast.unparse(n.func) == "pulumi.export" and isinstance(n.args[0], ast.Attribute)
    }
    assert exported >= NEEDED, f"not exported: {sorted(NEEDED - exported)}"
