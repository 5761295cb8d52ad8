"""IAM roles for Kubernetes service accounts (IRSA).

A pod whose service account carries the ``eks.amazonaws.com/role-arn``
annotation gets a web-identity token the cluster's OIDC provider signs; the
role's trust policy accepts that token only for one namespace/service account.
Used by the cluster (EBS CSI driver, VPC CNI) and the workload (API, backup).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_aws as aws

ROLE_ARN_ANNOTATION = "eks.amazonaws.com/role-arn"


def trust_policy(oidc_provider_arn: str, oidc_provider_url: str, namespace: str, service_account: str) -> str:
    """Trust policy: only ``system:serviceaccount:<namespace>:<service_account>`` may assume the role."""
    issuer = oidc_provider_url.removeprefix("https://")
    statement = {
        "Effect": "Allow",
        "Principal": {"Federated": oidc_provider_arn},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {
            "StringEquals": {
                f"{issuer}:sub": f"system:serviceaccount:{namespace}:{service_account}",
                f"{issuer}:aud": "sts.amazonaws.com",
            }
        },
    }
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]}, sort_keys=True)


def service_account_role(
    name: str,
    *,
    oidc_provider_arn: pulumi.Input[str],
    oidc_provider_url: pulumi.Input[str],
    namespace: str,
    service_account: str,
    tags: dict[str, str],
    opts: pulumi.ResourceOptions,
    managed_policy_arns: Sequence[str] = (),
    inline_policy: pulumi.Input[str] | None = None,
) -> aws.iam.Role:
    """A role only ``namespace/service_account`` can assume, with managed and/or inline policies."""
    role = aws.iam.Role(
        name,
        assume_role_policy=pulumi.Output.all(oidc_provider_arn, oidc_provider_url).apply(
            lambda a: trust_policy(a[0], a[1], namespace, service_account)
        ),
        tags={**tags, "Name": name},
        opts=opts,
    )
    for i, arn in enumerate(managed_policy_arns):
        aws.iam.RolePolicyAttachment(f"{name}-managed-{i}", role=role.name, policy_arn=arn, opts=opts)
    if inline_policy is not None:
        aws.iam.RolePolicy(f"{name}-access", role=role.id, policy=inline_policy, opts=opts)
    return role


def allow(actions: Sequence[str], resources: Sequence[Any]) -> dict[str, Any]:
    """One Allow statement (resources may be Outputs)."""
    return {"Effect": "Allow", "Action": list(actions), "Resource": list(resources)}
