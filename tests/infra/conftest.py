"""Fixtures for the platform tests: each stack rendered once per session.

The program runs the way ``pulumi up`` would run it, offline under Pulumi's
mocks (pynomaly_cli.offline.render); the tests read what it declared. All
renderings the tests need start together at the beginning of the session.
"""

from __future__ import annotations

import pytest
from infra_helpers import (
    BAD_SETTINGS,
    DEV_VARIANT,
    NO_CLUSTER,
    STACKS,
    change_numbers,
    rendered,
    submit,
    warning_equals_critical,
    write_baselines,
)

from pynomaly_cli.offline import PLACEHOLDERS, Rendering
from pynomaly_ops import baselines
from pynomaly_ops import settings as stack_settings


@pytest.fixture(scope="session")
def numbers_files(tmp_path_factory) -> dict[str, str]:
    """Modified copies of baselines.yaml, by what was changed."""
    return {
        "changed": str(write_baselines(tmp_path_factory.mktemp("changed"), change_numbers)),
        "warning_equals_critical": str(write_baselines(tmp_path_factory.mktemp("bad"), warning_equals_critical)),
    }


@pytest.fixture(scope="session", autouse=True)
def _start_renderings(numbers_files):
    for stack in STACKS:
        submit(stack)
    submit("dev", DEV_VARIANT)
    for path in numbers_files.values():
        submit("dev", NO_CLUSTER, env={baselines.PATH_ENV: path})
    for stack, overrides, *_ in BAD_SETTINGS:
        submit(stack, overrides)


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
def dev_variant() -> Rendering:
    return rendered("dev", DEV_VARIANT)


@pytest.fixture(scope="session")
def changed(numbers_files) -> tuple[baselines.Baselines, Rendering]:
    """dev rendered against a copy of baselines.yaml with some numbers changed."""
    path = numbers_files["changed"]
    return baselines.load(path), rendered("dev", NO_CLUSTER, env={baselines.PATH_ENV: path})
