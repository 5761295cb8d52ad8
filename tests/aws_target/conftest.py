"""The AWS fault library against moto, in-process: no account, no endpoint but moto's (mock_aws intercepts every
call before it leaves botocore). Every API call the library makes in a test is checked against the runner's
IAM policy (docs/aws-drill-permissions.json) when the test ends."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import aws_testkit as kit
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from aws_target import target as targets
from aws_target.target import Target


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, tmp_path):
    kit.isolated_credentials(monkeypatch, tmp_path)
    monkeypatch.setattr(targets, "POLL_INTERVAL_S", 0.01)


@pytest.fixture(autouse=True)
def calls(monkeypatch) -> Iterator[kit.Calls]:
    recorder = kit.Calls().install(monkeypatch)
    yield recorder
    recorder.assert_allowed()


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
