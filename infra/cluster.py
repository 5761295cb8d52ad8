"""Cluster tier: EKS control plane, managed nodes, add-ons, and the Kubernetes provider.

Built from pulumi-aws resources directly (no component provider binary).

Reaching the API endpoint: the private endpoint is always on; the public one
only when ``cluster.public_access_cidrs`` lists CIDRs, and then only from
them. ``pulumi up`` talks to the cluster through :attr:`Cluster.provider`, so
the machine running it must reach one of the two: either run it inside the
VPC (a CI runner or bastion in the private subnets, or over VPN / Direct
Connect / a peered VPC) for a private-only cluster, or add the runner's egress
CIDR with ``pulumi config set --path 'cluster.public_access_cidrs[0]' 203.0.113.7/32``.
Otherwise the Kubernetes resources fail with "cluster unreachable" (a timeout
dialing the endpoint) after the AWS resources are created.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.irsa import service_account_role
from infra.tier import Tier, assume_role_policy
from pynomaly_ops.settings import Cluster as ClusterSettings

CONTROL_PLANE_LOGS = ["api", "audit", "authenticator"]
ADMIN_POLICY_ARN = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
MANAGED = "arn:aws:iam::aws:policy/"
CLUSTER_POLICIES = [MANAGED + "AmazonEKSClusterPolicy"]
NODE_POLICIES = [MANAGED + "AmazonEKSWorkerNodePolicy", MANAGED + "AmazonEC2ContainerRegistryReadOnly"]
# Add-ons whose controllers call AWS get their own IRSA role (namespace, service account, policy).
ADDON_ROLES = {
    "vpc-cni": ("kube-system", "aws-node", MANAGED + "AmazonEKS_CNI_Policy"),
    "aws-ebs-csi-driver": ("kube-system", "ebs-csi-controller-sa", MANAGED + "service-role/AmazonEBSCSIDriverPolicy"),
}
# Add-ons running as Deployments need the nodes first. metrics-server (an EKS community add-on, not installed by
# default) feeds the HPA its CPU and memory figures.
ADDONS_ON_NODES = ("coredns", "aws-ebs-csi-driver", "metrics-server")
ADDONS = ("vpc-cni", "kube-proxy", "coredns", "aws-ebs-csi-driver", "metrics-server")
# The VPC CNI enforces NetworkPolicy objects only with its network policy agent switched on.
ADDON_CONFIG = {"vpc-cni": {"enableNetworkPolicy": "true"}}


@dataclass(frozen=True)
class ClusterArgs:
    settings: ClusterSettings
    vpc_id: pulumi.Input[str]
    private_subnet_ids: Sequence[pulumi.Input[str]]
    secrets_kms_key_arn: pulumi.Input[str]
    logs_kms_key_arn: pulumi.Input[str]  # the control-plane log group's


def kubeconfig(name: str, endpoint: str, ca_data: str, region: str) -> str:
    """A kubeconfig that authenticates with ``aws eks get-token`` (no static credentials in the state)."""
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "aws",
            "args": ["eks", "get-token", "--cluster-name", name, "--region", region, "--output", "json"],
            "interactiveMode": "Never",
        }
    }
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": name, "cluster": {"server": endpoint, "certificate-authority-data": ca_data}}],
            "users": [{"name": name, "user": user}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
            "current-context": name,
        },
        sort_keys=True,
    )


class Cluster(Tier):
    TIER = "cluster"

    cluster: aws.eks.Cluster
    name: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    provider: k8s.Provider  # every Kubernetes resource of the stack goes through it
    security_group_id: pulumi.Output[str]  # the nodes' (and so the pods') group
    oidc_provider_arn: pulumi.Output[str]  # for IRSA roles
    oidc_provider_url: pulumi.Output[str]

    def __init__(self, stack: str, tags: dict[str, str], args: ClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(stack, tags, opts)
        s = args.settings
        name = self.name_of("eks")
        nodes_sg, control_plane_sg = self._security_groups(args.vpc_id, name)
        log_group = aws.cloudwatch.LogGroup(
            self.name_of("control-plane-logs"),
            # EKS writes to this fixed name; creating it first sets the retention.
            name=f"/aws/eks/{name}/cluster",
            retention_in_days=s.log_retention_days,
            kms_key_id=args.logs_kms_key_arn,
            tags=self.tagged("control-plane-logs"),
            opts=self.child,
        )
        control_plane_role, control_plane_policies = self._role("control-plane", "eks.amazonaws.com", CLUSTER_POLICIES)
        cluster = aws.eks.Cluster(
            name,
            name=name,
            version=s.version,
            role_arn=control_plane_role.arn,
            access_config={"authentication_mode": "API", "bootstrap_cluster_creator_admin_permissions": True},
            encryption_config={"provider": {"key_arn": args.secrets_kms_key_arn}, "resources": ["secrets"]},
            enabled_cluster_log_types=CONTROL_PLANE_LOGS,
            vpc_config=self._endpoint_access(args, control_plane_sg),
            tags=self.tagged("eks"),
            # The role's policies are attached before and detached after the cluster: without them EKS cannot delete
            # the network interfaces and security groups it made.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[log_group, *control_plane_policies]),
        )
        issuer = cluster.identities.apply(lambda ids: ids[0]["oidcs"][0]["issuer"] if ids else None)
        oidc = aws.iam.OpenIdConnectProvider(
            self.name_of("oidc"),
            url=issuer,
            client_id_lists=["sts.amazonaws.com"],
            tags=self.tagged("oidc"),
            opts=self.child,
        )
        for i, principal in enumerate(s.admin_role_arns):
            self._admin_access(cluster, i, principal)
        node_group = self._node_group(cluster, args, nodes_sg)
        self._addons(cluster, node_group, oidc)
        region = aws.get_region_output().region
        config = pulumi.Output.all(cluster.name, cluster.endpoint, cluster.certificate_authority, region).apply(
            lambda a: kubeconfig(a[0], a[1], _ca_data(a[2]), a[3])
        )
        # Every Kubernetes resource goes through this provider, never the ambient kubeconfig; it waits for the
        # nodes so Deployments can become ready.
        provider = k8s.Provider(
            self.name_of("k8s"),
            kubeconfig=config,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[node_group]),
        )
        self.cluster = cluster
        self.name = cluster.name
        self.endpoint = cluster.endpoint
        self.kubeconfig = config
        self.provider = provider
        self.security_group_id = nodes_sg.id
        self.oidc_provider_arn = oidc.arn
        self.oidc_provider_url = oidc.url
        self.register_outputs(
            {
                "cluster": self.cluster,
                "name": self.name,
                "endpoint": self.endpoint,
                "kubeconfig": self.kubeconfig,
                "provider": self.provider,
                "security_group_id": self.security_group_id,
                "oidc_provider_arn": self.oidc_provider_arn,
                "oidc_provider_url": self.oidc_provider_url,
            }
        )

    @staticmethod
    def _endpoint_access(
        args: ClusterArgs, control_plane_sg: aws.ec2.SecurityGroup
    ) -> aws.eks.ClusterVpcConfigArgsDict:
        """Private endpoint always; the public one only for ``cluster.public_access_cidrs``."""
        cidrs = args.settings.public_access_cidrs
        vpc_config: aws.eks.ClusterVpcConfigArgsDict = {
            "subnet_ids": args.private_subnet_ids,
            "security_group_ids": [control_plane_sg.id],
            "endpoint_private_access": True,
            "endpoint_public_access": bool(cidrs),
        }
        if cidrs:
            vpc_config["public_access_cidrs"] = cidrs
        return vpc_config

    def _role(
        self, role: str, service: str, policies: list[str]
    ) -> tuple[aws.iam.Role, list[aws.iam.RolePolicyAttachment]]:
        """A service role and its policy attachments (what uses the role must also depend on those)."""
        iam_role = aws.iam.Role(
            self.name_of(role), assume_role_policy=assume_role_policy(service), tags=self.tagged(role), opts=self.child
        )
        attachments = [
            aws.iam.RolePolicyAttachment(
                self.name_of(f"{role}-policy-{i}"), role=iam_role.name, policy_arn=arn, opts=self.child
            )
            for i, arn in enumerate(policies)
        ]
        return iam_role, attachments

    def _security_groups(
        self, vpc_id: pulumi.Input[str], cluster_name: str
    ) -> tuple[aws.ec2.SecurityGroup, aws.ec2.SecurityGroup]:
        """Nodes (and so pods: the VPC CNI gives pods the node's groups) and the control plane's ENIs.

        The nodes' group is the one the database and cache admit. Its cluster tag marks it as the group the AWS Load
        Balancer Controller opens to the ALB for the pods' port.
        """
        owned = {f"kubernetes.io/cluster/{cluster_name}": "owned"}
        nodes, control_plane = (
            aws.ec2.SecurityGroup(
                self.name_of(role), vpc_id=vpc_id, description=text, tags=self.tagged(role, **extra), opts=self.child
            )
            for role, text, extra in (
                ("nodes", "EKS nodes and pods", owned),
                ("control-plane", "EKS control plane ENIs", {}),
            )
        )
        rules: list[tuple[str, aws.ec2.SecurityGroup, dict[str, Any]]] = [
            ("nodes-from-nodes", nodes, {"ip_protocol": "-1", "referenced_security_group_id": nodes.id}),
            (
                "nodes-from-control-plane",
                nodes,
                {
                    "ip_protocol": "tcp",
                    "from_port": 443,
                    "to_port": 65535,
                    "referenced_security_group_id": control_plane.id,
                },
            ),
            (
                "control-plane-from-nodes",
                control_plane,
                {"ip_protocol": "tcp", "from_port": 443, "to_port": 443, "referenced_security_group_id": nodes.id},
            ),
        ]
        for role, group, rule in rules:
            aws.vpc.SecurityGroupIngressRule(
                self.name_of(role),
                security_group_id=group.id,
                description=role,
                tags=self.tagged(role),
                **rule,
                opts=self.child,
            )
        for role, group in (("nodes", nodes), ("control-plane", control_plane)):
            # Nodes pull images and call AWS APIs (through NAT or endpoints); the control plane reaches kubelets and
            # webhooks. Left open, unlike the app instances' group: every pod shares the nodes' group (VPC CNI), and
            # the add-ons' ports between nodes and to the control plane are theirs to choose (EKS user guide,
            # "Restricting cluster traffic": "any protocol and ports ... for inter-node communication"); the
            # workload's pods are narrowed one by one by their NetworkPolicies instead.
            aws.vpc.SecurityGroupEgressRule(
                self.name_of(f"{role}-egress"),
                security_group_id=group.id,
                ip_protocol="-1",
                cidr_ipv4="0.0.0.0/0",
                description=f"{role} egress",
                tags=self.tagged(f"{role}-egress"),
                opts=self.child,
            )
        return nodes, control_plane

    def _admin_access(self, cluster: aws.eks.Cluster, index: int, principal: str) -> None:
        """An EKS access entry (access API, not the aws-auth ConfigMap) with cluster-admin policy."""
        entry = aws.eks.AccessEntry(
            self.name_of(f"admin-{index}"),
            cluster_name=cluster.name,
            principal_arn=principal,
            type="STANDARD",
            tags=self.tagged(f"admin-{index}"),
            opts=self.child,
        )
        aws.eks.AccessPolicyAssociation(
            self.name_of(f"admin-{index}-policy"),
            cluster_name=cluster.name,
            principal_arn=entry.principal_arn,
            policy_arn=ADMIN_POLICY_ARN,
            access_scope={"type": "cluster"},
            opts=self.child,
        )

    def _node_group(
        self, cluster: aws.eks.Cluster, args: ClusterArgs, nodes_sg: aws.ec2.SecurityGroup
    ) -> aws.eks.NodeGroup:
        s = args.settings
        template = aws.ec2.LaunchTemplate(
            self.name_of("nodes"),
            description="EKS managed nodes: IMDSv2 only, encrypted gp3",
            vpc_security_group_ids=[nodes_sg.id],
            # Hop limit 1: pods cannot reach the node's instance credentials; they get their own through IRSA.
            metadata_options={
                "http_endpoint": "enabled",
                "http_tokens": "required",
                "http_put_response_hop_limit": 1,
            },
            block_device_mappings=[
                {
                    "device_name": "/dev/xvda",
                    "ebs": {
                        "volume_size": s.node_disk_gb,
                        "volume_type": "gp3",
                        "encrypted": "true",
                        "delete_on_termination": "true",
                    },
                }
            ],
            tag_specifications=[
                {"resource_type": kind, "tags": self.tagged("node")} for kind in ("instance", "volume")
            ],
            tags=self.tagged("nodes"),
            opts=self.child,
        )
        node_role, node_policies = self._role("node", "ec2.amazonaws.com", NODE_POLICIES)
        return aws.eks.NodeGroup(
            self.name_of("nodes"),
            cluster_name=cluster.name,
            node_role_arn=node_role.arn,
            subnet_ids=args.private_subnet_ids,
            instance_types=[s.node_instance_type],
            ami_type="AL2023_x86_64_STANDARD",
            scaling_config={"min_size": s.node_min, "desired_size": s.node_desired, "max_size": s.node_max},
            update_config={"max_unavailable": 1},
            launch_template={"id": template.id, "version": template.latest_version.apply(str)},
            tags=self.tagged("nodes"),
            # Nodes join only with the worker policies attached, and EKS needs them to delete the instances and ENIs.
            # With the Cluster Autoscaler (infra/cluster_addons.py) the desired size is its to set: `pulumi up` must
            # not shrink a group it grew for the HPA.
            opts=pulumi.ResourceOptions.merge(
                self.child,
                pulumi.ResourceOptions(
                    depends_on=node_policies,
                    ignore_changes=["scalingConfig.desiredSize"] if s.node_autoscaler else None,
                ),
            ),
        )

    def _addons(self, cluster: aws.eks.Cluster, node_group: aws.eks.NodeGroup, oidc: aws.iam.OpenIdConnectProvider):
        for addon in ADDONS:
            role_arn = None
            if addon in ADDON_ROLES:
                namespace, account, policy = ADDON_ROLES[addon]
                role_arn = service_account_role(
                    self.name_of(f"{addon}-irsa"),
                    oidc_provider_arn=oidc.arn,
                    oidc_provider_url=oidc.url,
                    namespace=namespace,
                    service_account=account,
                    managed_policy_arns=[policy],
                    tags=self.tags,
                    opts=self.child,
                ).arn
            aws.eks.Addon(
                self.name_of(addon),
                cluster_name=cluster.name,
                addon_name=addon,
                service_account_role_arn=role_arn,
                configuration_values=json.dumps(ADDON_CONFIG[addon]) if addon in ADDON_CONFIG else None,
                resolve_conflicts_on_create="OVERWRITE",
                resolve_conflicts_on_update="OVERWRITE",
                tags=self.tagged(addon),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[node_group] if addon in ADDONS_ON_NODES else []),
            )


def _ca_data(authority: Any) -> str:
    """The cluster CA from ``certificate_authority`` (an object, or a one-element list in older shapes)."""
    if isinstance(authority, list):
        authority = authority[0] if authority else {}
    return (authority or {}).get("data", "")
