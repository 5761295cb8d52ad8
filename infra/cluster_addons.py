"""Cluster add-ons: the AWS Load Balancer Controller and the Cluster Autoscaler, as Helm releases.

Without the controller the workload's Ingress never gets an ALB; without the
autoscaler the HPA's upper range (``scaling.pods_max`` in baselines.yaml) gets
no nodes beyond ``cluster.node_desired``. Each is a Helm release in
``kube-system`` through the cluster's explicit Kubernetes provider, with its own
IRSA role that only its service account can assume, and each has a switch
(``cluster.load_balancer_controller``, ``cluster.node_autoscaler``).

Nodes allow one IMDS hop only, so pods cannot learn the region or VPC from the
instance metadata: both are passed to the charts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from infra.irsa import ROLE_ARN_ANNOTATION, allow, service_account_role
from infra.tier import Tier, policy_document
from pynomaly_ops.settings import Cluster as ClusterSettings

NAMESPACE = "kube-system"
# The class the workload's Ingress names (`ingressClassName`); the controller's chart creates it.
INGRESS_CLASS = "alb"


@dataclass(frozen=True)
class HelmChart:
    name: str  # the chart's, also the release's and its service account's
    repo: str
    version: str


# Chart 1.14.1 installs controller v2.14.1. On a version bump, replace the policy file with that release's
# docs/install/iam_policy.json (kubernetes-sigs/aws-load-balancer-controller).
LOAD_BALANCER_CONTROLLER = HelmChart("aws-load-balancer-controller", "https://aws.github.io/eks-charts", "1.14.1")
LOAD_BALANCER_CONTROLLER_POLICY = Path(__file__).with_name("aws-load-balancer-controller-iam-policy.json")
AUTOSCALER_CHART, AUTOSCALER_REPO = "cluster-autoscaler", "https://kubernetes.github.io/autoscaler"
# The chart and image per cluster minor, with their sources: chart, image and cluster must agree.
AUTOSCALER_VERSIONS = Path(__file__).with_name("cluster-autoscaler-versions.yaml")
AUTOSCALER_IMAGE_REPOSITORY = "registry.k8s.io/autoscaling/cluster-autoscaler"
# From this minor the autoscaler watches resource.k8s.io (DRA) at startup and blocks without RBAC for it.
AUTOSCALER_DRA_FROM_MINOR = 35
# The autoscaler only reads these (ASGs, the launch templates and instance types behind them, the node group).
AUTOSCALER_READ_ACTIONS = (
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:DescribeLaunchConfigurations",
    "autoscaling:DescribeScalingActivities",
    "autoscaling:DescribeTags",
    "ec2:DescribeImages",
    "ec2:DescribeInstanceTypes",
    "ec2:DescribeLaunchTemplateVersions",
    "ec2:GetInstanceTypesFromInstanceRequirements",
    "eks:DescribeNodegroup",
)
AUTOSCALER_WRITE_ACTIONS = ("autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup")


@dataclass(frozen=True)
class AutoscalerRelease:
    chart: HelmChart
    image_tag: str  # the chart's appVersion: the image it was released and tested with


def autoscaler_release(cluster_version: str) -> AutoscalerRelease:
    """The chart and image for a cluster of ``cluster_version``, from the table; a ValueError if none fits."""
    table = yaml.safe_load(AUTOSCALER_VERSIONS.read_text())
    row = table.get(cluster_version)
    if row is None:
        raise ValueError(
            f"pynomaly:cluster.version {cluster_version}: no Cluster Autoscaler chart is known to fit it "
            f"(known: {', '.join(table)}); add the chart for it to {AUTOSCALER_VERSIONS.name} "
            "or set cluster.node_autoscaler false"
        )
    app = str(row["app_version"])
    if app.rsplit(".", 1)[0] != cluster_version:
        raise ValueError(f"{AUTOSCALER_VERSIONS.name}: {cluster_version} runs autoscaler {app}, another minor")
    if int(cluster_version.split(".")[1]) >= AUTOSCALER_DRA_FROM_MINOR and not row["dra_rbac"]:
        raise ValueError(f"{AUTOSCALER_VERSIONS.name}: chart {row['chart']} lacks the resource.k8s.io RBAC {app} needs")
    return AutoscalerRelease(HelmChart(AUTOSCALER_CHART, AUTOSCALER_REPO, str(row["chart"])), f"v{app}")


@dataclass(frozen=True)
class ClusterAddonsArgs:
    settings: ClusterSettings
    provider: k8s.Provider
    cluster_name: pulumi.Input[str]
    oidc_provider_arn: pulumi.Input[str]
    oidc_provider_url: pulumi.Input[str]
    vpc_id: pulumi.Input[str]
    region: str
    account_id: pulumi.Input[str]
    autoscaler: AutoscalerRelease | None = None  # the chart and image (autoscaler_release); needed when it is on


def discovery_tags(cluster_name: str) -> dict[str, str]:
    """The tags EKS puts on a managed node group's ASG, which the autoscaler discovers and may change."""
    return {"k8s.io/cluster-autoscaler/enabled": "true", f"k8s.io/cluster-autoscaler/{cluster_name}": "owned"}


def autoscaler_policy(cluster_name: pulumi.Input[str], region: str, account_id: pulumi.Input[str]) -> pulumi.Output:
    """Read anything; resize or shrink only the ASGs tagged for this cluster's autoscaler."""
    groups = pulumi.Output.concat("arn:aws:autoscaling:", region, ":", account_id, ":autoScalingGroup:*")
    conditions = pulumi.Output.from_input(cluster_name).apply(
        lambda name: {"StringEquals": {f"aws:ResourceTag/{k}": v for k, v in discovery_tags(name).items()}}
    )
    return policy_document(
        allow(AUTOSCALER_READ_ACTIONS, ["*"]),
        {**allow(AUTOSCALER_WRITE_ACTIONS, [groups]), "Condition": conditions},
    )


class ClusterAddons(Tier):
    TIER = "addons"

    # What the workload's Ingress (and Services) must wait for; None when switched off.
    load_balancer_controller: k8s.helm.v3.Release | None
    node_autoscaler: k8s.helm.v3.Release | None
    releases: list[pulumi.Output[str | None]]  # the installed releases' names

    def __init__(
        self, stack: str, tags: dict[str, str], args: ClusterAddonsArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__(stack, tags, opts)
        self.args = args
        s = args.settings
        self.load_balancer_controller = self._load_balancer_controller() if s.load_balancer_controller else None
        self.node_autoscaler = self._node_autoscaler() if s.node_autoscaler else None
        installed = [r for r in (self.load_balancer_controller, self.node_autoscaler) if r is not None]
        self.releases = [r.name for r in installed]
        self.register_outputs({"releases": self.releases})

    def _role(self, role: str, chart: HelmChart, policy: pulumi.Input[str]) -> pulumi.Output[str]:
        """The ARN of a role only ``kube-system/<chart name>`` can assume."""
        return service_account_role(
            self.name_of(role),
            oidc_provider_arn=self.args.oidc_provider_arn,
            oidc_provider_url=self.args.oidc_provider_url,
            namespace=NAMESPACE,
            service_account=chart.name,
            inline_policy=policy,
            tags=self.tags,
            opts=self.child,
        ).arn

    def _release(self, chart: HelmChart, values: dict[str, Any]) -> k8s.helm.v3.Release:
        return k8s.helm.v3.Release(
            self.name_of(chart.name),
            name=chart.name,
            chart=chart.name,
            version=chart.version,
            repository_opts={"repo": chart.repo},
            namespace=NAMESPACE,
            values=values,
            # A failed install or upgrade is rolled back rather than left half-applied.
            atomic=True,
            opts=pulumi.ResourceOptions(parent=self, provider=self.args.provider),
        )

    def _load_balancer_controller(self) -> k8s.helm.v3.Release:
        a, chart = self.args, LOAD_BALANCER_CONTROLLER
        role_arn = self._role("lb-controller-irsa", chart, LOAD_BALANCER_CONTROLLER_POLICY.read_text())
        return self._release(
            chart,
            {
                "clusterName": a.cluster_name,
                "region": a.region,
                "vpcId": a.vpc_id,
                "replicaCount": 2,
                "podDisruptionBudget": {"maxUnavailable": 1},
                "serviceAccount": {"create": True, "name": chart.name, "annotations": {ROLE_ARN_ANNOTATION: role_arn}},
                "ingressClass": INGRESS_CLASS,
                "createIngressClassResource": True,
                # The stack has no LoadBalancer Services; left on, this webhook intercepts every Service and fails
                # their creation whenever the controller is not ready.
                "enableServiceMutatorWebhook": False,
                # The ALBs and target groups it makes carry the stack's tags like the rest.
                "defaultTags": self.tags,
            },
        )

    def _node_autoscaler(self) -> k8s.helm.v3.Release:
        a = self.args
        release = a.autoscaler or autoscaler_release(a.settings.version)
        chart = release.chart
        role_arn = self._role("autoscaler-irsa", chart, autoscaler_policy(a.cluster_name, a.region, a.account_id))
        return self._release(
            chart,
            {
                "cloudProvider": "aws",
                "awsRegion": a.region,
                "autoDiscovery": {"clusterName": a.cluster_name},
                "image": {
                    "repository": AUTOSCALER_IMAGE_REPOSITORY,
                    "tag": release.image_tag,
                },
                "rbac": {
                    "create": True,
                    "serviceAccount": {
                        "create": True,
                        "name": chart.name,
                        "annotations": {ROLE_ARN_ANNOTATION: role_arn},
                    },
                },
                "extraArgs": {"balance-similar-node-groups": True, "expander": "least-waste"},
            },
        )
