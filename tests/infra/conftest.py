"""Fixtures for the platform tests: each stack rendered once per session.

The program runs the way ``pulumi up`` would run it, offline under Pulumi's
mocks (pynomaly_ops.offline.render); the tests read what it declared.
"""

from __future__ import annotations

import pytest
from infra_helpers import ONCALL, STACKS, rendered

from infra import settings as stack_settings
from pynomaly_ops import baselines
from pynomaly_ops.offline import PLACEHOLDERS, Rendering, render


@pytest.fixture(scope="session", params=STACKS)
def stack(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def r(stack: str) -> Rendering:
    return rendered(stack)


@pytest.fixture(scope="session")
def cfg(stack: str) -> stack_settings.StackSettings:
    """The stack's settings as the program saw them (placeholders included)."""
    return stack_settings.from_stack_file(stack, PLACEHOLDERS)


@pytest.fixture(scope="session")
def numbers() -> baselines.Baselines:
    return baselines.load()


@pytest.fixture(scope="session")
def dev_in_maintenance() -> Rendering:
    """dev with the maintenance switch on and alarm e-mails configured."""
    return render("dev", {"pynomaly:lb.maintenance_mode": True, "pynomaly:alarms.emails": ONCALL})
