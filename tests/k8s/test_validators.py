"""The rendered manifests against real Kubernetes tooling: the OpenAPI schema of the cluster's version
(kubernetes-validate, strict) and checkov's kubernetes framework (zero failures; skips listed with reasons)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from pynomaly_cli import render_k8s as rk
from pynomaly_ops import settings as stack_settings

from .conftest import STACKS, VARIANT

CHECKOV = rk.find_checkov()
needs_checkov = pytest.mark.skipif(
    CHECKOV is None,
    reason=f"checkov is not installed (it has heavy pinned dependencies, so it lives in its own venv): "
    f"{rk.CHECKOV_INSTALL}, or set {rk.CHECKOV_ENV}",
)


@pytest.fixture(scope="module")
def rendered_dirs(stack_render, tmp_path_factory) -> dict[str, tuple[list[Path], str]]:
    """Every stack's manifests plus the all-options prod variant, one directory each."""
    root = tmp_path_factory.mktemp("k8s")
    result = {}
    for label, stack, config in [*((s, s, None) for s in STACKS), ("prod-variant", "prod", VARIANT)]:
        rendered = stack_render(stack, config)
        paths = rk.write(rendered.objects, root / label)
        result[label] = (paths, rk.cluster_version(rendered.rendering))
    return result


def test_schema_version_maps_the_eks_version():
    assert rk.schema_version("1.31") == "1.31.0"
    with pytest.raises(rk.RenderError, match=r"no schema for Kubernetes 1\.9.*upgrade it"):
        rk.schema_version("1.9")


def test_manifests_match_the_cluster_versions_schema(rendered_dirs):
    for label, (paths, version) in rendered_dirs.items():
        assert version == stack_settings.schema()["cluster.version"]["default"]
        results = rk.validate_schema(paths, version)
        assert [r for r in results if r.error] == [], label
        skipped = {r.kind for r in results if r.skipped}
        # Only the Prometheus operator's CRD has no schema in Kubernetes itself.
        assert skipped == ({"monitoring.coreos.com/v1/PrometheusRule"} if label == "prod-variant" else set()), label
        assert sum(1 for r in results if not r.skipped) >= 19


def test_schema_check_catches_a_broken_manifest(rendered_dirs, tmp_path):
    paths, version = rendered_dirs["prod"]
    source = next(p for p in paths if "deployment-pynomaly-blue" in p.name)
    broken = yaml.safe_load(source.read_text())
    broken["spec"]["replicas"] = "three"
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}
    target = tmp_path / source.name
    target.write_text(yaml.safe_dump(broken))
    (result,) = rk.validate_schema([target], version)
    assert result.error and ("replicas" in result.error or "httpGett" in result.error), result


@needs_checkov
def test_checkov_passes_with_only_the_listed_skips(rendered_dirs):
    skips = rk.load_skips()
    assert set(skips) == {"CKV_K8S_43"}
    root = next(iter(rendered_dirs.values()))[0][0].parent.parent
    assert rk.run_checkov(root, CHECKOV, skips) == []


@needs_checkov
def test_checkov_catches_an_insecure_pod(rendered_dirs, tmp_path):
    paths, _ = rendered_dirs["prod"]
    source = next(p for p in paths if "deployment-pynomaly-worker" in p.name)
    insecure = copy.deepcopy(yaml.safe_load(source.read_text()))
    container = insecure["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"] |= {"privileged": True, "allowPrivilegeEscalation": True}
    (tmp_path / source.name).write_text(yaml.safe_dump(insecure))
    failed = {f.check_id for f in rk.run_checkov(tmp_path, CHECKOV, rk.load_skips())}
    assert {"CKV_K8S_16", "CKV_K8S_20"} <= failed  # privileged, privilege escalation


def test_every_skip_needs_a_reason(tmp_path):
    bad = tmp_path / "skips.yaml"
    bad.write_text("skips:\n  - id: CKV_K8S_43\n")
    with pytest.raises(rk.RenderError, match="every skip needs an id and a reason"):
        rk.load_skips(bad)
    assert all(len(reason) > 40 for reason in rk.load_skips().values())
