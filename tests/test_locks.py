"""The lock files of what runs in production (deploy/requirements/*.lock, made by scripts/lock): every package
pinned and hashed, and every dependency the extras declare in pyproject.toml locked at a version it allows."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ROOT / "deploy" / "requirements"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = canonicalize_name(PYPROJECT["project"]["name"])
# The extras each production artefact installs: the AMI and the app image, and the load generators' image.
BUILDS = ["service", "service,loadtests"]
TARGET = {"python_version": "3.11", "python_full_version": "3.11.7", "sys_platform": "linux"}


def lock_path(extras: str) -> Path:
    return LOCKS / f"{extras.replace(',', '-')}.lock"


def entries(path: Path) -> list[tuple[Requirement, list[str]]]:
    """Each requirement of a pip requirements file with its hashes (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        spec, *hashes = (part.strip() for part in line.split("--hash="))
        out.append((Requirement(spec), hashes))
    return out


def declared(extras: str) -> list[Requirement]:
    """The project's dependencies with ``extras``, self-references (pynomaly-ops[local]) expanded."""
    todo, seen, out = list(extras.split(",")), set(), [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in PYPROJECT["project"]["optional-dependencies"][extra]:
            req = Requirement(text)
            if canonicalize_name(req.name) == PROJECT:
                todo += sorted(req.extras)
            else:
                out.append(req)
    return out


@pytest.mark.parametrize("extras", BUILDS)
def test_every_locked_package_is_pinned_and_hashed(extras):
    locked = entries(lock_path(extras))
    assert locked, f"{lock_path(extras)} is empty"
    for req, hashes in locked:
        (spec,) = req.specifier
        assert spec.operator == "==", f"{req}: not pinned"
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), f"{req}: no hash"
    assert PROJECT not in {canonicalize_name(r.name) for r, _ in locked}, "the project itself is installed from source"


@pytest.mark.parametrize("extras", BUILDS)
def test_the_lock_holds_every_declared_dependency_at_an_allowed_version(extras):
    versions: dict[str, str] = {}
    for req, _ in entries(lock_path(extras)):
        if req.marker is None or req.marker.evaluate(TARGET):
            versions[canonicalize_name(req.name)] = next(iter(req.specifier)).version
    for req in declared(extras):
        if req.marker is not None and not Marker(str(req.marker)).evaluate(TARGET):
            continue
        name = canonicalize_name(req.name)
        assert name in versions, f"{req} (pyproject.toml) is not in {lock_path(extras).name}: run scripts/lock"
        assert req.specifier.contains(versions[name], prereleases=True), (
            f"{lock_path(extras).name} locks {name} {versions[name]}, outside {req}: run scripts/lock"
        )


def test_the_ami_installs_the_lock_with_hashes_then_the_project_without_dependencies():
    script = (ROOT / "deploy" / "ami" / "install.sh").read_text()
    assert '--require-hashes --no-deps -r "$PREFIX/src/deploy/requirements/service.lock"' in script
    assert '--no-deps -e "$PREFIX/src[service]"' in script
