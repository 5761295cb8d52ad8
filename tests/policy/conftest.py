"""Fixtures for the policy pack's tests: every rendering they need, made once per session, two at a time."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from policy_helpers import PUBLIC_ENDPOINT, STACKS

from pynomaly_cli.offline import Rendering, render


@pytest.fixture(scope="session")
def renderings() -> dict[str, Rendering]:
    """Each stack file's rendering by stack name, and dev with a public endpoint as "dev-public-endpoint"."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = {stack: pool.submit(render, stack) for stack in STACKS}
        runs["dev-public-endpoint"] = pool.submit(render, "dev", PUBLIC_ENDPOINT)
        return {key: run.result() for key, run in runs.items()}


@pytest.fixture(scope="session")
def prod(renderings) -> Rendering:
    return renderings["prod"]
