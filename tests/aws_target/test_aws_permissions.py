"""The runner's IAM policy (docs/aws-drill-permissions.json): every call the library makes is allowed by it on
the resource it acts on (checked after every test in this directory, conftest.py), and it allows nothing the
library does not call. And the library talks to the AWS APIs only: nothing in it can send traffic elsewhere."""

from __future__ import annotations

import ast

import aws_testkit as kit
import botocore.session
import pytest
from botocore import xform_name

from pynomaly_ops import REPO_ROOT

LIBRARY = REPO_ROOT / "aws_target"
# The core modules the library hands its clients to.
CLIENT_USERS = [REPO_ROOT / "pynomaly_ops" / f"{m}.py" for m in ("object_versions", "queue_messages")]
# IAM actions that are not an API operation of the same name: the operations that need them.
NOT_AN_OPERATION = {
    "s3:ListBucket": ["list_objects_v2"],
    "s3:ListBucketVersions": ["list_object_versions"],
    "s3:GetObjectVersion": ["copy_object"],  # from a version
    "s3:DeleteObjectVersion": ["delete_object"],  # with a VersionId
    "kms:GenerateDataKey": ["send_message", "put_object"],  # the queue and the bucket are SSE-KMS
    "kms:Decrypt": ["receive_message", "get_object", "copy_object", "send_message"],
    "fis:TagResource": ["start_experiment"],  # its tags, on the experiment it creates
}
BOTO3_SERVICE = {"elasticloadbalancing": "elbv2"}


def _actions() -> list[str]:
    return [a for s in kit.policy()["Statement"] for a in kit._listed(s["Action"])]


def _source() -> str:
    return "\n".join(p.read_text() for p in [*LIBRARY.glob("*.py"), *CLIENT_USERS])


def test_the_policy_is_a_document_of_allow_statements_each_named():
    document = kit.policy()
    assert document["Version"] == "2012-10-17"
    sids = [s["Sid"] for s in document["Statement"]]
    assert len(sids) == len(set(sids)) and all(s["Effect"] == "Allow" for s in document["Statement"])
    for statement in document["Statement"]:
        actions = kit._listed(statement["Action"])
        assert len(actions) == len(set(actions)) and all(a.count(":") == 1 for a in actions), statement["Sid"]


@pytest.mark.parametrize("action", sorted(set(_actions()) - set(NOT_AN_OPERATION)))
def test_each_action_is_an_operation_the_library_calls(action):
    """The action exists in botocore's model of its service, and the library calls it."""
    prefix, operation = action.split(":")
    model = botocore.session.get_session().get_service_model(BOTO3_SERVICE.get(prefix, prefix))
    assert operation in model.operation_names, f"{action}: no such operation in botocore's {prefix} model"
    assert f"{xform_name(operation)}(" in _source() or f'"{xform_name(operation)}"' in _source(), (
        f"{action} is not called"
    )


@pytest.mark.parametrize("action", sorted(set(_actions()) & set(NOT_AN_OPERATION)))
def test_each_other_action_is_needed_by_a_call_the_library_makes(action):
    assert any(f"{op}(" in _source() or f'"{op}"' in _source() for op in NOT_AN_OPERATION[action]), action


def test_every_resource_is_this_stacks_or_the_run_command_document():
    """Scoped to the stack by name (its resources are named ``<stack>-<tier>-<role>``) or, for its instances,
    by tag; only the describe-only actions, which IAM cannot scope, have ``*``."""
    template = kit.policy(kit.STACK_PLACEHOLDER)
    for statement in template["Statement"]:
        resources, condition = kit._listed(statement["Resource"]), statement.get("Condition", {})
        scoped_by_tag = any(kit.STACK_PLACEHOLDER in json_value for json_value in map(str, condition.values()))
        for resource in resources:
            assert (
                kit.STACK_PLACEHOLDER in resource
                or resource == "arn:aws:ssm:*::document/AWS-RunShellScript"
                or scoped_by_tag
                or (resource == "*" and all(":Describe" in a or ":Get" in a for a in kit._listed(statement["Action"])))
            ), f"{statement['Sid']}: {resource} is not scoped to the stack"


def test_the_stacks_names_are_the_programs():
    """The placeholders stand where the Pulumi program's names put the stack (pynomaly_ops/naming.py)."""
    text = kit.POLICY_FILE.read_text()
    for tier, role in (
        ("fleet", "asg"),
        ("database", "primary"),
        ("cache", "redis"),
        ("lb", "alb"),
        ("cluster", "eks"),
    ):
        assert f"{kit.STACK_PLACEHOLDER}-{tier}-{role}" in text
    assert all(f"{kit.STACK_PLACEHOLDER}-queue-{q}" in text for q in ("jobs", "jobs-dlq"))


ALLOWED_IMPORTS = {"__future__", "base64", "contextlib", "collections", "json", "os", "time", "dataclasses", "datetime",
                   "typing", "uuid", "boto3"}  # fmt: skip
# The EKS cluster's API, through the official client (aws_target/kubernetes.py): the control plane, not the service.
CLUSTER_API = {"kubernetes"}


def test_the_library_sends_nothing_but_aws_api_calls():
    """No HTTP, socket, database or Redis client: the service itself is never called (what users see is the
    drill's own measurement); every call is boto3's, to the endpoint boto3 is configured for."""
    for path in LIBRARY.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                top = name.split(".")[0]
                allowed = (
                    ALLOWED_IMPORTS
                    | {"aws_target", "pynomaly_ops"}
                    | (CLUSTER_API if path.stem == "kubernetes" else set())
                )
                assert top in allowed, f"{path.name} imports {name}"
