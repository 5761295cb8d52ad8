"""Cluster add-ons (infra/cluster_addons.py): the Load Balancer Controller and the Cluster Autoscaler as Helm
releases through the cluster's provider, their IRSA roles, their switches, and the subnets' discovery tags."""

from __future__ import annotations

import json

import pytest
from infra_helpers import inputs, one, policy, rendered, rid, submit

from infra.cluster_addons import (
    AUTOSCALER_WRITE_ACTIONS,
    LOAD_BALANCER_CONTROLLER,
    LOAD_BALANCER_CONTROLLER_POLICY,
    NAMESPACE,
    autoscaler_release,
)
from pynomaly_cli import render_k8s as rk
from pynomaly_cli.offline import PLACEHOLDERS, Rendering
from pynomaly_ops import settings as stack_settings
from pynomaly_ops.naming import component_type

RELEASE = "kubernetes:helm.sh/v3:Release"
# Every stack runs the default cluster version (the chart follows it: tests/infra/test_aws_rules.py).
CLUSTER_AUTOSCALER = autoscaler_release(stack_settings.schema()["cluster.version"]["default"]).chart
CHARTS = {"lbc": LOAD_BALANCER_CONTROLLER, "ca": CLUSTER_AUTOSCALER}
ROLES = {"lbc": "lb-controller-irsa", "ca": "autoscaler-irsa"}
# Also an older cluster version: the autoscaler's image must follow it.
NO_LBC = {"pynomaly:cluster.load_balancer_controller": False, "pynomaly:cluster.version": "1.34"}
# Without the autoscaler the desired size must hold the HPA maximum itself (infra/node_capacity.py).
NO_CA = {"pynomaly:cluster.node_autoscaler": False, "pynomaly:cluster.node_desired": 13}


@pytest.fixture(scope="module")
def switched_off() -> dict[str, Rendering]:
    """dev with each add-on switched off in turn (both renderings run at once)."""
    for overrides in (NO_LBC, NO_CA):
        submit("dev", overrides)
    return {"lbc": rendered("dev", NO_LBC), "ca": rendered("dev", NO_CA)}


def releases(r: Rendering) -> dict[str, dict]:
    return {x.plain_inputs["chart"]: x.plain_inputs for x in r.of_type(RELEASE)}


def cluster_name(r: Rendering) -> str:
    return one(r, "aws:eks/cluster:Cluster").plain_inputs["name"]


def role_arn(r: Rendering, stack: str, key: str) -> str:
    return r.named(f"{stack}-addons-{ROLES[key]}").state["arn"]


def test_each_release_is_pinned_and_runs_through_the_cluster_provider(r, stack):
    component = one(r, component_type("addons", "ClusterAddons"))
    (provider,) = r.of_type("pulumi:providers:kubernetes")
    found = r.of_type(RELEASE)
    assert sorted(x.plain_inputs["chart"] for x in found) == sorted(c.name for c in CHARTS.values())
    for release in found:
        spec = release.plain_inputs
        chart = next(c for c in CHARTS.values() if c.name == spec["chart"])
        assert (spec["name"], spec["version"], spec["repositoryOpts"]["repo"]) == (
            chart.name,
            chart.version,
            chart.repo,
        )
        assert spec["namespace"] == NAMESPACE == "kube-system"
        assert (release.provider or "").rsplit("::", 1)[0] == provider.urn
        assert release.parent == component.urn
    # Every AWS resource of the add-ons is the component's too.
    assert {x.parent for x in r.resources if x.name.startswith(f"{stack}-addons-") and x is not component} == {
        component.urn
    }


def test_load_balancer_controller_values(r, stack, cfg):
    values = releases(r)[LOAD_BALANCER_CONTROLLER.name]["values"]
    assert values["clusterName"] == cluster_name(r)
    assert values["region"] == cfg.region
    assert values["vpcId"] == rid(f"{stack}-network-vpc")  # pods get no IMDS hop to look it up themselves
    assert values["replicaCount"] == 2
    sa = values["serviceAccount"]
    assert sa["create"] is True and sa["name"] == "aws-load-balancer-controller"
    assert sa["annotations"] == {"eks.amazonaws.com/role-arn": role_arn(r, stack, "lbc")}
    # The controller serves the class the workload's Ingress asks for.
    (ingress,) = r.of_type("kubernetes:networking.k8s.io/v1:Ingress")
    assert values["ingressClass"] == ingress.plain_inputs["spec"]["ingressClassName"]
    assert values["createIngressClassResource"] is True


def test_load_balancer_controller_policy_is_the_stored_upstream_file(r, stack):
    doc = policy(inputs(r, f"{stack}-addons-lb-controller-irsa-access"))
    assert doc == json.loads(LOAD_BALANCER_CONTROLLER_POLICY.read_text())
    # Inline policies are limited to 10,240 characters (without whitespace) per role.
    assert len(json.dumps(doc, separators=(",", ":"))) < 10240
    # It creates load balancers only when tagged for a cluster, and changes only those it tagged.
    by_action = {a: s for s in doc["Statement"] for a in s["Action"]}
    create = by_action["elasticloadbalancing:CreateLoadBalancer"]["Condition"]
    assert create == {"Null": {"aws:RequestTag/elbv2.k8s.aws/cluster": "false"}}
    delete = by_action["elasticloadbalancing:DeleteLoadBalancer"]["Condition"]
    assert delete == {"Null": {"aws:ResourceTag/elbv2.k8s.aws/cluster": "false"}}


@pytest.mark.parametrize("key", ["lbc", "ca"])
def test_irsa_roles_trust_only_their_service_account(r, stack, key):
    oidc = one(r, "aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    issuer = oidc.plain_inputs["url"].removeprefix("https://")
    trust = json.loads(inputs(r, f"{stack}-addons-{ROLES[key]}")["assumeRolePolicy"])
    (statement,) = trust["Statement"]
    assert statement["Effect"] == "Allow" and statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"] == {"Federated": oidc.state["arn"]}
    account = CHARTS[key].name
    assert statement["Condition"] == {
        "StringEquals": {
            f"{issuer}:sub": f"system:serviceaccount:kube-system:{account}",
            f"{issuer}:aud": "sts.amazonaws.com",
        }
    }
    # ...which is the service account the chart creates.
    values = releases(r)[account]["values"]
    sa = values["serviceAccount"] if key == "lbc" else values["rbac"]["serviceAccount"]
    assert sa["name"] == account


def test_autoscaler_values_follow_the_cluster(r, stack, cfg):
    values = releases(r)[CLUSTER_AUTOSCALER.name]["values"]
    assert values["cloudProvider"] == "aws" and values["awsRegion"] == cfg.region
    assert values["autoDiscovery"] == {"clusterName": cluster_name(r)}
    assert values["image"]["tag"] == autoscaler_release(cfg.cluster.version).image_tag
    assert values["image"]["tag"].startswith(f"v{cfg.cluster.version}.")
    assert values["extraArgs"] == {"balance-similar-node-groups": True, "expander": "least-waste"}
    sa = values["rbac"]["serviceAccount"]
    assert sa["create"] is True and sa["annotations"] == {"eks.amazonaws.com/role-arn": role_arn(r, stack, "ca")}


def test_autoscaler_image_follows_the_cluster_version(switched_off):
    release = releases(switched_off["lbc"])[CLUSTER_AUTOSCALER.name]
    assert (release["version"], release["values"]["image"]["tag"]) == ("9.53.0", "v1.34.2")


def test_autoscaler_may_resize_only_this_clusters_groups(r, stack, cfg):
    doc = policy(inputs(r, f"{stack}-addons-autoscaler-irsa-access"))
    name = cluster_name(r)
    tagged = {
        "StringEquals": {
            f"aws:ResourceTag/k8s.io/cluster-autoscaler/{name}": "owned",
            "aws:ResourceTag/k8s.io/cluster-autoscaler/enabled": "true",
        }
    }
    writes = [s for s in doc["Statement"] if set(s["Action"]) & set(AUTOSCALER_WRITE_ACTIONS)]
    assert len(writes) == 1 and sorted(writes[0]["Action"]) == sorted(AUTOSCALER_WRITE_ACTIONS)
    assert writes[0]["Condition"] == tagged
    assert writes[0]["Resource"] == [f"arn:aws:autoscaling:{cfg.region}:123456789012:autoScalingGroup:*"]
    # Everything unconditioned only reads.
    for statement in doc["Statement"]:
        if "Condition" not in statement:
            assert all(a.split(":")[1].startswith(("Describe", "Get")) for a in statement["Action"]), statement


def test_node_group_desired_size_is_left_to_the_autoscaler(r, stack, switched_off):
    assert one(r, "aws:eks/nodeGroup:NodeGroup").ignore_changes == ["scalingConfig.desiredSize"]
    assert one(switched_off["ca"], "aws:eks/nodeGroup:NodeGroup").ignore_changes == []


@pytest.mark.parametrize("off", ["lbc", "ca"])
def test_each_switch_turns_its_piece_off(switched_off, off):
    r = switched_off[off]
    on = "ca" if off == "lbc" else "lbc"
    assert set(releases(r)) == {CHARTS[on].name}
    names = {x.name for x in r.resources}
    assert f"dev-addons-{ROLES[off]}" not in names and f"dev-addons-{ROLES[off]}-access" not in names
    assert f"dev-addons-{ROLES[on]}" in names


def test_subnets_carry_the_load_balancer_discovery_tags(r, stack):
    roles = {"kubernetes.io/role/elb", "kubernetes.io/role/internal-elb"}
    expected = {"public": {"kubernetes.io/role/elb": "1"}, "app": {"kubernetes.io/role/internal-elb": "1"}, "data": {}}
    for tier, tags in expected.items():
        for i in range(3):
            subnet = inputs(r, f"{stack}-network-{tier}-{i}")["tags"]
            assert {k: v for k, v in subnet.items() if k in roles} == tags, (tier, i, subnet)


def test_autoscaler_without_room_to_scale_is_refused():
    with pytest.raises(stack_settings.SettingsError, match=r"pynomaly:cluster\.node_autoscaler: is on but"):
        stack_settings.from_stack_file("dev", {**PLACEHOLDERS, "pynomaly:cluster.node_max": "3"})
    off = {**PLACEHOLDERS, "pynomaly:cluster.node_max": "3", "pynomaly:cluster.node_autoscaler": "false"}
    assert stack_settings.from_stack_file("dev", off).cluster.node_max == 3


def test_render_k8s_lists_releases_apart_from_the_manifests(r, tmp_path, monkeypatch):
    monkeypatch.setattr("pynomaly_cli.offline.render", lambda stack, overrides=None: r)
    out = tmp_path / "k8s"
    paths, _ = rk.render_stack(r.stack, out, None)
    assert len(paths) == len(rk.manifests(r)) > 0
    assert not any("Release" in p.read_text() for p in paths)
    listed = (out / rk.RELEASES_FILE).read_text().splitlines()
    assert listed == sorted(f"kube-system/{c.name}: {c.name} {c.version} from {c.repo}" for c in CHARTS.values())
    assert {p.suffix for p in out.iterdir()} == {".yaml", ".txt"}
