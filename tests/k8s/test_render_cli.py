"""``pynomaly-ops render-k8s``: the command as an operator runs it."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from pynomaly_cli import render_k8s as rk
from pynomaly_cli.cli import app

from .test_validators import needs_checkov

runner = CliRunner()


@needs_checkov
def test_render_prod_with_both_checks(tmp_path):
    out = tmp_path / "k8s"
    (out).mkdir()
    (out / "stale.yaml").write_text("kind: Leftover\n")
    result = runner.invoke(app, ["render-k8s", "--stack", "prod", "--out", str(out), "--check"])
    assert result.exit_code == 0, result.output
    assert "22/22 valid" in result.output and "0 failed" in result.output
    files = sorted(out.glob("*.yaml"))
    assert len(files) == 22 and not (out / "stale.yaml").exists()
    first = yaml.safe_load(files[0].read_text())
    assert (first["kind"], first["metadata"]["name"]) == ("Namespace", "pynomaly-production")
    kinds = {yaml.safe_load(f.read_text())["kind"] for f in files}
    assert kinds == {
        "Namespace",
        "ServiceAccount",
        "Role",  # with its RoleBinding: FIS's pod actions (fis.enabled in prod)
        "RoleBinding",
        "ConfigMap",
        "Deployment",
        "Service",
        "Ingress",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "CronJob",
    }


def test_config_overrides_must_be_key_value(tmp_path):
    result = runner.invoke(
        app, ["render-k8s", "--stack", "prod", "--out", str(tmp_path), "-c", "workload.active_color"]
    )
    assert result.exit_code == 2
    assert "expected KEY=VALUE" in result.output


def test_bad_override_names_the_key(tmp_path):
    result = runner.invoke(
        app, ["render-k8s", "--stack", "prod", "--out", str(tmp_path), "-c", "workload.active_color=purple"]
    )
    assert result.exit_code == 2
    assert "workload.active_color" in result.output and "blue" in result.output


def test_a_stack_without_a_cluster_is_refused(stack_render):
    rendering = stack_render("dev", {"cluster.enabled": "false"}).rendering
    with pytest.raises(rk.RenderError, match=r"declares 0 EKS clusters.*cluster\.enabled"):
        rk.cluster_version(rendering)
    assert not [r for r in rendering.resources if r.type.startswith("kubernetes:")]


def test_a_resource_that_is_no_kubernetes_object_is_refused():
    from pynomaly_cli.offline import Rendering, Resource

    # (Helm releases are not refused: render-k8s lists them in helm-releases.txt, see tests/infra/test_cluster_addons.)
    thing = Resource("urn:x", "kubernetes:example.com/v1:Thing", "thing", None, True, {"spec": {}}, {})
    with pytest.raises(rk.RenderError, match=r"kubernetes:example\.com/v1:Thing thing is not a Kubernetes object"):
        rk.manifests(Rendering("prod", [thing], {}))
