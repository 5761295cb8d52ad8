"""What every tier component shares: type token, naming, tags, parenting, policy JSON."""

from __future__ import annotations

import json
from typing import Any

import pulumi

from pynomaly_ops.naming import component_type, resource_name


class Tier(pulumi.ComponentResource):
    """Base of the tier components: ``pynomaly:<tier>:<Name>``.

    Children are created with :attr:`child` options (parented to the
    component) and named with :meth:`name_of` (``<stack>-<tier>-<role>``).
    A tier declares its outputs as annotated attributes in its class body,
    assigns them in ``__init__`` and passes them to ``register_outputs``, so
    what ``__main__`` reads is visible to a reader and a type checker.
    """

    TIER: str = ""

    def __init__(self, stack: str, tags: dict[str, str], opts: pulumi.ResourceOptions | None = None):
        super().__init__(
            component_type(self.TIER, type(self).__name__), resource_name(stack, self.TIER, "component"), None, opts
        )
        self.stack = stack
        self.tags = {**tags, "Tier": self.TIER}
        self.child = pulumi.ResourceOptions(parent=self)

    def name_of(self, role: str) -> str:
        return resource_name(self.stack, self.TIER, role)

    def tagged(self, role: str, **extra: str) -> dict[str, str]:
        return {**self.tags, "Name": self.name_of(role), **extra}


def policy_document(*statements: dict[str, Any]) -> pulumi.Output[str]:
    """An IAM/resource policy as JSON; statements may hold Outputs (ARNs).

    Built locally rather than with ``aws.iam.get_policy_document`` so the
    offline rendering needs no provider call.
    """
    doc = {"Version": "2012-10-17", "Statement": list(statements)}
    return pulumi.Output.from_input(doc).apply(lambda d: json.dumps(d, sort_keys=True))


def assume_role_policy(service: str) -> str:
    """Trust policy letting one AWS service assume a role."""
    statement = {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def deny_insecure_transport(resources: list[Any], action: str) -> dict[str, Any]:
    """Statement refusing any request not made over TLS."""
    return {
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": action,
        "Resource": resources,
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }
