"""The AWS fault library against moto, in-process: no account, no endpoint but moto's (mock_aws intercepts every
call before it leaves botocore). Every API call the library makes in a test is checked against the runner's
IAM policy (docs/aws-drill-permissions.json) when the test ends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import aws_testkit as kit
import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from aws_target import target as targets
from aws_target.target import Target

ENVIRONMENT_REGION = "us-east-1"  # boto3's default here; the stack is in kit.REGION


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, tmp_path):
    for var in ("AWS_PROFILE", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "PYNOMALY_AWS_OUTPUTS",
                "PYNOMALY_AWS_STACK"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", ENVIRONMENT_REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    monkeypatch.setattr(targets, "POLL_INTERVAL_S", 0.01)


class Calls:
    """Every API call made through a client the library asked :meth:`Target.client` for."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, Any]]] = []

    def watch(self, client: Any, service: str) -> Any:
        def record(params: dict[str, Any], model: Any, **_: Any) -> None:
            self.seen.append((service, model.name, dict(params)))

        client.meta.events.register("before-parameter-build.*.*", record, unique_id="aws-target-calls")
        return client

    def operations(self) -> set[tuple[str, str]]:
        return {(service, op) for service, op, _ in self.seen}


@pytest.fixture(autouse=True)
def calls(monkeypatch) -> Iterator[Calls]:
    recorder, real = Calls(), Target.client
    monkeypatch.setattr(Target, "client", lambda self, service: recorder.watch(real(self, service), service))
    yield recorder
    document = kit.policy()
    denied = [
        (op, action, arn)
        for service, op, params in recorder.seen
        for action, arn in kit.required(service, op, params)
        if not kit.allowed(document, action, arn)
    ]
    assert not denied, f"calls docs/aws-drill-permissions.json does not allow: {denied}"
    outside = [(op, p) for service, op, p in recorder.seen if service == "s3" and not kit.within_drill_objects(op, p)]
    assert not outside, f"S3 calls outside the drill's objects: {outside}"


@pytest.fixture
def stack(tmp_path) -> Iterator[str]:
    """A stack in moto; the path of its saved outputs (what ``outputs=`` takes)."""
    with mock_aws():
        yield kit.write_outputs(tmp_path / "outputs.json", kit.build_stack())


@pytest.fixture
def stub(monkeypatch, calls) -> Iterator[Callable[[str], Stubber]]:
    """``stub("rds")``: the library's clients of that service answer from a Stubber (what moto cannot do),
    which checks each call's parameters against botocore's model and the test's expectations."""
    made: list[Stubber] = []

    def make(service: str) -> Stubber:
        client, current = kit.client(service), Target.client
        stubber = Stubber(client)
        stubber.activate()
        made.append(stubber)
        monkeypatch.setattr(
            Target, "client", lambda self, s: calls.watch(client, s) if s == service else current(self, s)
        )
        return stubber

    yield make
    for stubber in made:
        stubber.assert_no_pending_responses()
        stubber.deactivate()
