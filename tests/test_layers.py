"""The layers of ARCHITECTURE.md hold at run time: the service and the local stack start with no Pulumi SDK
installed, and importing the core does nothing (import-linter checks the static imports in scripts/test)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from pynomaly_ops import REPO_ROOT

# A finder that makes every pulumi* module unimportable, as in an install without the platform extra.
BLOCK_PULUMI = textwrap.dedent(
    """
    import importlib.abc, sys
    class NoPulumi(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0].startswith("pulumi"):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
    sys.meta_path.insert(0, NoPulumi())
    """
)
WITHOUT_PULUMI = [
    "local.cli",
    "local.stack",
    "local.faults",
    "local.probes",
    "local.moto_server",
    "aws_target.faults",
    "aws_target.probes",
    "aws_target.recovery",
    "service.api",
    "service.worker",
    "pynomaly_ops.alarms",
    "pynomaly_ops.environment",
    "pynomaly_ops.settings",
]


def _import(modules: list[str]) -> subprocess.CompletedProcess:
    code = BLOCK_PULUMI + "".join(f"import {m}\n" for m in modules)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("module", WITHOUT_PULUMI)
def test_imports_with_every_pulumi_module_blocked(module):
    result = _import([module])
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_block_is_real():
    """infra/ needs Pulumi: with the block in place it cannot be imported, so the test above can fail."""
    result = _import(["infra.alarms"])
    assert result.returncode != 0 and "(blocked)" in result.stderr


def test_importing_the_core_reads_nothing():
    code = textwrap.dedent(
        """
        import pkgutil, importlib, pynomaly_ops
        for m in pkgutil.iter_modules(pynomaly_ops.__path__):
            importlib.import_module(f"pynomaly_ops.{m.name}")
        from pynomaly_ops import baselines, settings
        assert baselines._load.cache_info().currsize == 0, "the numbers file was read at import"
        assert settings.schema.cache_info().currsize == 0, "Pulumi.yaml was read at import"
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
