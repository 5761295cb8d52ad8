"""Instances: the instance metadata service answers session (IMDSv2) requests only."""

from __future__ import annotations

from collections.abc import Iterator

from policy.encryption import needs_launch_template
from policy.resource_types import EC2_INSTANCE, LAUNCH_TEMPLATE, NODE_GROUP
from policy.rule import Problem, Props, typed_rule
from policy.stack import StackContext


def _tokens_required(props: Props, ctx: StackContext) -> Iterator[Problem]:
    if (props.get("metadataOptions") or {}).get("httpTokens") != "required":
        yield Problem(
            "instance metadata answers IMDSv1 requests (no session token), which SSRF can reach",
            "metadata_options={'http_tokens': 'required', 'http_put_response_hop_limit': 1}",
        )


imdsv2_required = typed_rule(
    "imdsv2-required",
    "Every launch template, instance and EKS node group requires IMDSv2",
    {LAUNCH_TEMPLATE: _tokens_required, EC2_INSTANCE: _tokens_required, NODE_GROUP: needs_launch_template},
)
