"""The EKS cluster as the program declares it (pulumi-aws inputs under mocks), and IRSA scoping."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from infra.cluster import ADDONS, kubeconfig
from infra.fault_injection import FIS_USER
from pynomaly_cli.render_k8s import HELM_RELEASE
from pynomaly_ops import settings as stack_settings

EKS = "aws:eks/cluster:Cluster"


def test_control_plane(each_stack):
    s = each_stack.settings.cluster
    (cluster,) = each_stack.aws(EKS)
    assert cluster["version"] == s.version
    assert cluster["accessConfig"]["authenticationMode"] == "API"
    assert cluster["enabledClusterLogTypes"] == ["api", "audit", "authenticator"]
    enc = cluster["encryptionConfig"]
    assert enc["resources"] == ["secrets"] and enc["provider"]["keyArn"].startswith("arn:aws:kms:")
    vpc = cluster["vpcConfig"]
    assert vpc["endpointPrivateAccess"] is True
    assert vpc["endpointPublicAccess"] is False  # no public_access_cidrs in any stack file
    assert "publicAccessCidrs" not in vpc
    assert len(vpc["subnetIds"]) == 3
    (logs,) = [g for g in each_stack.aws("aws:cloudwatch/logGroup:LogGroup") if g["name"].startswith("/aws/eks/")]
    assert logs["name"] == f"/aws/eks/{cluster['name']}/cluster"
    assert logs["retentionInDays"] == s.log_retention_days


def test_public_endpoint_only_from_configured_cidrs_and_admin_access_entries(variant):
    """The admin roles with the cluster-admin policy; with fis.enabled also FIS's experiment role, as the Kubernetes
    user its RoleBinding names and with no access policy (the Role in the workload's namespace is all it may do)."""
    (cluster,) = variant.aws(EKS)
    assert cluster["vpcConfig"]["endpointPublicAccess"] is True
    assert cluster["vpcConfig"]["publicAccessCidrs"] == ["203.0.113.0/24"]
    admins = variant.settings.cluster.admin_role_arns
    entries = {e["principalArn"]: e for e in variant.aws("aws:eks/accessEntry:AccessEntry")}
    assert variant.settings.fis.enabled  # prod: the FIS entry is checked here
    fis_role = variant.rendering.named(f"{variant.rendering.stack}-fis-role").state["arn"]
    fis_entry = entries.pop(fis_role)
    assert {k: fis_entry[k] for k in ("type", "userName")} == {"type": "STANDARD", "userName": FIS_USER}
    assert "kubernetesGroups" not in fis_entry
    assert sorted(entries) == sorted(admins)
    policies = variant.aws("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
    assert sorted(p["principalArn"] for p in policies) == sorted(admins)
    assert {p["policyArn"] for p in policies} == {"arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"}
    assert {p["accessScope"]["type"] for p in policies} == {"cluster"}


def test_only_admin_access_entries_without_fis(stack_render):
    s = stack_render("prod", {"fis.enabled": "false"})
    assert not s.settings.fis.enabled
    assert [e["principalArn"] for e in s.aws("aws:eks/accessEntry:AccessEntry")] == list(
        s.settings.cluster.admin_role_arns
    )
    assert not s.all("Role") and not s.all("RoleBinding")


def test_no_aws_auth_config_map(each_stack):
    assert not [m for m in each_stack.objects if m["metadata"]["name"] == "aws-auth"]


def test_node_group_imdsv2_and_encrypted_gp3(each_stack):
    s = each_stack.settings.cluster
    (group,) = each_stack.aws("aws:eks/nodeGroup:NodeGroup")
    assert group["scalingConfig"] == {"minSize": s.node_min, "desiredSize": s.node_desired, "maxSize": s.node_max}
    assert group["instanceTypes"] == [s.node_instance_type]
    assert len(group["subnetIds"]) == 3
    (template,) = [
        t for t in each_stack.aws("aws:ec2/launchTemplate:LaunchTemplate") if "EKS" in t.get("description", "")
    ]
    assert template["metadataOptions"]["httpTokens"] == "required"
    assert template["metadataOptions"]["httpPutResponseHopLimit"] == 1
    (disk,) = template["blockDeviceMappings"]
    assert disk["ebs"] == {
        "volumeSize": s.node_disk_gb,
        "volumeType": "gp3",
        "encrypted": "true",
        "deleteOnTermination": "true",
    }


def test_addons_and_ebs_csi_irsa(each_stack):
    addons = {a["addonName"]: a for a in each_stack.aws("aws:eks/addon:Addon")}
    assert set(addons) == set(ADDONS) == {"vpc-cni", "coredns", "kube-proxy", "aws-ebs-csi-driver", "metrics-server"}
    # NetworkPolicies are only enforced with the CNI's policy agent; the HPA needs metrics-server.
    assert json.loads(addons["vpc-cni"]["configurationValues"]) == {"enableNetworkPolicy": "true"}
    roles = {r.name: r.plain_inputs for r in each_stack.rendering.of_type("aws:iam/role:Role")}
    ebs_role = roles[f"{each_stack.rendering.stack}-cluster-aws-ebs-csi-driver-irsa"]
    trust = json.loads(ebs_role["assumeRolePolicy"])["Statement"][0]
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
    (sub,) = [v for k, v in trust["Condition"]["StringEquals"].items() if k.endswith(":sub")]
    assert sub == "system:serviceaccount:kube-system:ebs-csi-controller-sa"
    assert addons["aws-ebs-csi-driver"]["serviceAccountRoleArn"].endswith("aws-ebs-csi-driver-irsa")
    (oidc,) = each_stack.aws("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    assert oidc["clientIdLists"] == ["sts.amazonaws.com"] and oidc["url"].startswith("https://oidc.eks.")


def test_explicit_provider_from_the_cluster_kubeconfig(each_stack):
    (provider,) = each_stack.rendering.of_type("pulumi:providers:kubernetes")
    config = json.loads(provider.plain_inputs["kubeconfig"])
    (cluster,) = each_stack.aws(EKS)
    (user,) = config["users"]
    assert user["user"]["exec"]["command"] == "aws"
    assert user["user"]["exec"]["args"][:4] == ["eks", "get-token", "--cluster-name", cluster["name"]]
    assert config["clusters"][0]["cluster"]["server"].startswith("https://")
    assert "token" not in json.dumps(user["user"]).replace("get-token", "")  # no static credential


def test_every_kubernetes_object_uses_the_explicit_provider(each_stack):
    """No object may fall back to the ambient kubeconfig (the default provider)."""
    (provider,) = each_stack.rendering.of_type("pulumi:providers:kubernetes")
    k8s = [r for r in each_stack.rendering.resources if r.type.startswith("kubernetes:")]
    # Patches are merged into the objects they patch; a Helm release's objects exist only in the cluster.
    objects = [r for r in k8s if not r.type.endswith("Patch") and r.type != HELM_RELEASE]
    assert len(objects) == len(each_stack.objects) > 0
    assert {(r.provider or "").rsplit("::", 1)[0] for r in k8s} == {provider.urn}


def test_kubeconfig_shape():
    config = json.loads(kubeconfig("c", "https://e", "Q0E=", "eu-west-1"))
    assert config["current-context"] == "c"
    assert config["users"][0]["user"]["exec"]["args"] == [
        "eks",
        "get-token",
        "--cluster-name",
        "c",
        "--region",
        "eu-west-1",
        "--output",
        "json",
    ]


@pytest.mark.parametrize("account", ["pynomaly", "pynomaly-backup"])
def test_workload_roles_are_limited_to_this_stack(each_stack, account):
    stack = each_stack.rendering.stack
    roles = {r.name: r.plain_inputs for r in each_stack.rendering.of_type("aws:iam/role:Role")}
    trust = json.loads(roles[f"{stack}-workload-{account}-irsa"]["assumeRolePolicy"])["Statement"][0]
    (sub,) = [v for k, v in trust["Condition"]["StringEquals"].items() if k.endswith(":sub")]
    namespace = "pynomaly-production" if stack == "prod" else f"pynomaly-{stack}"
    assert sub == f"system:serviceaccount:{namespace}:{account}"
    policies = {r.name: r.plain_inputs for r in each_stack.rendering.of_type("aws:iam/rolePolicy:RolePolicy")}
    doc = json.loads(policies[f"{stack}-workload-{account}-irsa-access"]["policy"])
    resources = [res for st in doc["Statement"] for res in st["Resource"]]
    assert resources and all(stack in res and "*" not in res.removesuffix("/*") for res in resources), resources
    actions = {a for st in doc["Statement"] for a in st["Action"]}
    assert "secretsmanager:GetSecretValue" in actions
    assert not any(a.endswith(":*") or a == "*" for a in actions)
    if account == "pynomaly-backup":
        assert not any(a.startswith("sqs:") for a in actions)
        assert all(
            "storage-backups" in r for st in doc["Statement"] if "s3:PutObject" in st["Action"] for r in st["Resource"]
        )
    sa = each_stack.get("ServiceAccount", account)
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(f"{account}-irsa")


def test_default_version_is_one_eks_still_creates_for_a_while():
    """EKS refuses versions past extended support: 1.31, the old default, ended on 2026-11-26."""
    default = stack_settings.schema()["cluster.version"]["default"]
    assert stack_settings.eks_supported(default, date.today() + timedelta(days=90)) == default


@pytest.mark.parametrize(
    ("version", "today", "creatable"),
    [
        ("1.31", date(2026, 11, 25), True),
        ("1.31", date(2026, 11, 26), False),
        ("1.27", date(2026, 1, 1), False),  # older than the calendar: long past
        ("1.37", date(2026, 11, 26), True),  # newer than the calendar: not ended
    ],
)
def test_version_past_eks_extended_support_is_refused(version, today, creatable):
    if creatable:
        assert stack_settings.eks_supported(version, today) == version
    else:
        with pytest.raises(ValueError, match=rf"EKS no longer creates Kubernetes {version} clusters.*set it to 1\.\d+"):
            stack_settings.eks_supported(version, today)


@pytest.mark.parametrize(("role", "user_type"), [("control-plane", EKS), ("node", "aws:eks/nodeGroup:NodeGroup")])
def test_eks_waits_for_its_roles_policies(prod, role, user_type):
    """Attached before and detached after: EKS needs them to make and to delete instances, ENIs and groups."""
    r = prod.rendering
    attachments = {
        x.urn
        for x in r.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if x.name.startswith(f"prod-cluster-{role}-policy-")
    }
    (user,) = r.of_type(user_type)
    assert attachments and attachments <= set(user.dependencies)
