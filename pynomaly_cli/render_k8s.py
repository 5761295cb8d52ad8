"""``pynomaly-ops render-k8s``: every Kubernetes object a stack declares, as YAML, and the two checks on them.

The objects come from the offline rendering (the real program under Pulumi's
mocks): each pulumi-kubernetes resource's recorded inputs are its manifest.
The checks are the Kubernetes OpenAPI schema of the stack's
``cluster.version`` (kubernetes-validate) and checkov's kubernetes framework
with the skips listed, each with its reason, in :data:`CHECKOV_SKIPS_FILE`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pynomaly_cli.offline import SECRET, Rendering
from pynomaly_ops import REPO_ROOT

KUBERNETES_PREFIX = "kubernetes:"
CHECKOV_SKIPS_FILE = REPO_ROOT / "policy" / "checkov-k8s-skips.yaml"
CHECKOV_ENV = "CHECKOV_BIN"
CHECKOV_KNOWN_PATHS = (REPO_ROOT / ".venv-checkov" / "bin" / "checkov", Path("/opt/checkov-venv/bin/checkov"))
CHECKOV_INSTALL = "python3 -m venv /opt/checkov-venv && /opt/checkov-venv/bin/pip install checkov"
# Applied first so a reviewer (or `kubectl apply -f DIR`) meets the namespace before what lives in it.
KIND_ORDER = ("Namespace", "ServiceAccount", "ConfigMap")
# A Helm release is a chart, not an object: its objects exist only once Helm renders the chart against the cluster.
# render-k8s lists the releases in RELEASES_FILE (not *.yaml, so neither check mistakes it for a manifest).
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
RELEASES_FILE = "helm-releases.txt"


class RenderError(RuntimeError):
    """The manifests cannot be produced or a check cannot run; the message says why and what to do."""


# ---------------------------------------------------------------------------
# Manifests


def _plain(value: Any) -> Any:
    """JSON from the mock record -> manifest values: integral floats back to ints (the RPC layer sends every number
    as a float), nulls dropped, secret markers kept visible as ``{"$secret": ...}`` so they can be caught."""
    if isinstance(value, dict):
        return {k: _plain(value[k]) for k in sorted(value) if value[k] is not None}  # stable files to diff
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _identity(manifest: dict[str, Any]) -> tuple[str, str, str]:
    meta = manifest["metadata"]
    return manifest["kind"], meta.get("namespace", ""), meta.get("name", "")


def _merged(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply of ``patch`` onto ``base`` as far as a review needs: maps merge, anything else is replaced."""
    out = dict(base)
    for key, value in patch.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def manifests(rendering: Rendering) -> list[dict[str, Any]]:
    """The Kubernetes objects, namespace-first, each ``apiVersion``/``kind``/``metadata``/... as applied.

    A ``*Patch`` resource (server-side apply of a few fields onto an object) is merged into the object it
    patches, so each object appears once, as the cluster ends up with it.
    """
    objects: dict[tuple[str, str, str], dict[str, Any]] = {}
    for resource in rendering.resources:
        if not resource.custom or not resource.type.startswith(KUBERNETES_PREFIX) or resource.type == HELM_RELEASE:
            continue
        body = _plain(resource.inputs)
        if "apiVersion" not in body or "kind" not in body:
            # A provider resource that is no object and has no summary of its own (unlike a Helm release).
            raise RenderError(f"{resource.type} {resource.name} is not a Kubernetes object; it cannot be rendered")
        head = {"apiVersion": body.pop("apiVersion"), "kind": body.pop("kind"), "metadata": body.pop("metadata", {})}
        manifest = head | body
        key = _identity(manifest)
        if resource.type.endswith("Patch"):
            if key not in objects:
                raise RenderError(f"{resource.type} {resource.name} patches {'/'.join(key)}, which the stack lacks")
            manifest = _merged(objects[key], manifest)
        objects[key] = manifest
    rank = {kind: i for i, kind in enumerate(KIND_ORDER)}
    return sorted(objects.values(), key=lambda m: (rank.get(m["kind"], len(rank)), *_identity(m)))


def helm_releases(rendering: Rendering) -> list[str]:
    """One line per Helm release: ``<namespace>/<release>: <chart> <version> from <repository>``."""
    lines = []
    for resource in rendering.of_type(HELM_RELEASE):
        spec = resource.plain_inputs
        where = f"{spec.get('namespace', 'default')}/{spec.get('name', resource.name)}"
        repo = (spec.get("repositoryOpts") or {}).get("repo", "(no repository)")
        lines.append(f"{where}: {spec['chart']} {spec.get('version', '(unpinned)')} from {repo}")
    return sorted(lines)


def secret_paths(value: Any, path: str = "") -> list[str]:
    """Where a value Pulumi marks secret sits in a manifest (none may: no secret belongs in one)."""
    if isinstance(value, dict):
        if set(value) == {SECRET}:
            return [path or "/"]
        return [p for k, v in value.items() for p in secret_paths(v, f"{path}/{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in secret_paths(v, f"{path}/{i}")]
    return []


def file_name(manifest: dict[str, Any], index: int) -> str:
    meta = manifest["metadata"]
    scope = meta.get("namespace", "cluster")
    slug = re.sub(r"[^a-z0-9.-]+", "-", f"{scope}-{manifest['kind'].lower()}-{meta.get('name', index)}")
    return f"{index:02d}-{slug}.yaml"


def write(objects: list[dict[str, Any]], out: Path) -> list[Path]:
    """One YAML file per object in ``out`` (emptied of earlier renderings' YAML first)."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.yaml"):
        old.unlink()
    paths = []
    for i, manifest in enumerate(objects):
        path = out / file_name(manifest, i)
        path.write_text(yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False))
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------
# Check 1: the Kubernetes OpenAPI schema


@dataclass(frozen=True)
class SchemaResult:
    file: str
    kind: str
    error: str | None = None  # None: valid
    skipped: str | None = None  # why it could not be checked (a CRD without a bundled schema)


def schema_version(cluster_version: str) -> str:
    """``1.31`` (an EKS version) -> ``1.31.0``, refused with the supported list when kubernetes-validate lacks it."""
    from kubernetes_validate.utils import all_versions
    from kubernetes_validate.version import __version__

    wanted = f"{cluster_version}.0"
    available = set(all_versions())
    if wanted not in available:
        raise RenderError(
            f"kubernetes-validate {__version__} has no schema for Kubernetes {cluster_version} "
            f"(it has {', '.join(sorted(available, key=_version_key))}); upgrade it "
            f"(.venv/bin/pip install -U kubernetes-validate) or set cluster.version to one of those"
        )
    return wanted


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def validate_schema(paths: list[Path], cluster_version: str) -> list[SchemaResult]:
    """Each file against the strict schema (unknown fields are errors) of ``cluster_version``."""
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

    version = schema_version(cluster_version)
    results = []
    for path in paths:
        manifest = yaml.safe_load(path.read_text())
        kind = f"{manifest['apiVersion']}/{manifest['kind']}"
        try:
            used = kubernetes_validate.validate(manifest, version, strict=True)
            if used != cluster_version:
                raise RenderError(f"kubernetes-validate used the {used} schema, not {cluster_version}")
        except SchemaNotFoundError:
            reason = f"{kind} is a custom resource: no schema for it ships with Kubernetes {cluster_version}"
            results.append(SchemaResult(path.name, kind, skipped=reason))
        except ValidationError as exc:
            where = "/".join(str(p) for p in exc.path) or "(root)"
            results.append(SchemaResult(path.name, kind, error=f"{where}: {exc.message}"))
        else:
            results.append(SchemaResult(path.name, kind))
    return results


# ---------------------------------------------------------------------------
# Check 2: checkov's kubernetes framework


@dataclass(frozen=True)
class CheckovFailure:
    check_id: str
    name: str
    resource: str
    file: str


def load_skips(path: Path = CHECKOV_SKIPS_FILE) -> dict[str, str]:
    """``{check id: reason}`` from the skips file; every skip needs a reason."""
    data = yaml.safe_load(path.read_text()) or {}
    skips = {}
    for entry in data.get("skips") or []:
        check, reason = entry.get("id"), (entry.get("reason") or "").strip()
        if not check or not reason:
            raise RenderError(f"{path}: every skip needs an id and a reason; fix the entry {entry!r}")
        skips[check] = reason
    return skips


def find_checkov() -> Path | None:
    """$CHECKOV_BIN, then checkov in its own venv (known paths), then on PATH."""
    if os.environ.get(CHECKOV_ENV):
        path = Path(os.environ[CHECKOV_ENV])
        if not path.is_file():
            raise RenderError(f"{CHECKOV_ENV}={path} is not a file; point it at the checkov executable")
        return path
    for path in CHECKOV_KNOWN_PATHS:
        if path.is_file():
            return path
    found = shutil.which("checkov")
    return Path(found) if found else None


def run_checkov(directory: Path, checkov: Path, skips: dict[str, str], timeout: float = 600) -> list[CheckovFailure]:
    """Failed checks of checkov's kubernetes framework over ``directory``, the listed skips excepted."""
    command = [str(checkov), "--framework", "kubernetes", "--directory", str(directory), "--output", "json", "--quiet"]
    command += ["--compact", "--skip-download"]
    if skips:
        command += ["--skip-check", ",".join(sorted(skips))]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=_checkov_env())
    try:
        report = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except json.JSONDecodeError:
        raise RenderError(
            f"checkov did not print a JSON report (exit {proc.returncode}): {proc.stderr[-2000:]}"
        ) from None
    reports = report if isinstance(report, list) else [report]
    failures = []
    for item in reports:
        for failed in (item.get("results") or {}).get("failed_checks") or []:
            failures.append(
                CheckovFailure(failed["check_id"], failed["check_name"], failed["resource"], failed["file_path"])
            )
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and not failures):
        raise RenderError(f"checkov failed to run (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return failures


def _checkov_env() -> dict[str, str]:
    # Offline: no Bridgecrew platform calls, no version check.
    return {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false", "LOG_LEVEL": "ERROR"}


# ---------------------------------------------------------------------------
# The command's steps


def cluster_version(rendering: Rendering) -> str:
    """The Kubernetes version the stack's EKS cluster declares (what the manifests must validate against)."""
    clusters = rendering.of_type("aws:eks/cluster:Cluster")
    if len(clusters) != 1:
        raise RenderError(
            f"stack {rendering.stack} declares {len(clusters)} EKS clusters; render-k8s needs exactly one "
            "(is cluster.enabled false in its stack file?)"
        )
    return clusters[0].plain_inputs["version"]


def render_stack(stack: str, out: Path, overrides: dict[str, Any] | None = None) -> tuple[list[Path], str]:
    """Run the program offline, refuse manifests holding a secret, write the YAML (and the Helm releases to
    RELEASES_FILE); returns the files and the cluster version."""
    from pynomaly_cli.offline import render

    rendering = render(stack, overrides)
    version = cluster_version(rendering)
    objects = manifests(rendering)
    leaks = [f"{m['kind']}/{m['metadata'].get('name')}{p}" for m in objects for p in secret_paths(m)]
    if leaks:
        raise RenderError(f"secret values would be written to manifests at: {', '.join(leaks)}")
    paths = write(objects, out)
    releases = helm_releases(rendering)
    (out / RELEASES_FILE).unlink(missing_ok=True)
    if releases:
        (out / RELEASES_FILE).write_text("".join(line + "\n" for line in releases))
    return paths, version
