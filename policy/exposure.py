"""Exposure: what the internet can reach."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pulumi_policy import PolicyResource

from policy.buckets import settings_of
from policy.resource_types import (
    BUCKET,
    BUCKET_PUBLIC_ACCESS_BLOCK,
    EC2_INSTANCE,
    EKS_CLUSTER,
    LAUNCH_TEMPLATE,
    LOAD_BALANCER,
    RDS_INSTANCE,
    SECURITY_GROUP,
    SECURITY_GROUP_INGRESS_RULE,
    SECURITY_GROUP_RULE,
    SUBNET,
)
from policy.rule import Problem, Props, Stack, linked_rule, referenced, resource_rule, truthy, typed_rule
from policy.stack import StackContext

WORLD = frozenset({"0.0.0.0/0", "::/0"})
# What the internet may reach, and only on the ALB: HTTPS, and HTTP that only redirects to it (alb-http-redirects).
WEB_PORTS = frozenset({80, 443})
PUBLIC_ACCESS_BLOCKS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")


@resource_rule("rds-not-public", "RDS instances are not publicly accessible", [RDS_INSTANCE])
def rds_not_public(props: Props, ctx: StackContext) -> Iterator[Problem]:
    if truthy(props.get("publiclyAccessible")):
        yield Problem(
            "publicly_accessible is true: the database gets a public address",
            "publicly_accessible=False on the aws.rds.Instance (infra/database.py)",
        )


def _template_addresses(props: Props, ctx: StackContext) -> Iterator[Problem]:
    if any(truthy(nic.get("associatePublicIpAddress")) for nic in props.get("networkInterfaces") or []):
        yield Problem(
            "a network interface gets a public IP address",
            "network_interfaces without associate_public_ip_address='true' (the instances sit in private subnets)",
        )


def _instance_address(props: Props, ctx: StackContext) -> Iterator[Problem]:
    if truthy(props.get("associatePublicIpAddress")):
        yield Problem("the instance gets a public IP address", "associate_public_ip_address=False")


def _subnet_addresses(props: Props, ctx: StackContext) -> Iterator[Problem]:
    if truthy(props.get("mapPublicIpOnLaunch")):
        yield Problem(
            "every instance launched here gets a public IP address",
            "map_public_ip_on_launch=False on the aws.ec2.Subnet (infra/network.py)",
        )


no_public_ip = typed_rule(
    "no-public-ip",
    "No instance gets a public IP address (launch templates, instances, subnets)",
    {LAUNCH_TEMPLATE: _template_addresses, EC2_INSTANCE: _instance_address, SUBNET: _subnet_addresses},
)


@linked_rule("s3-public-access-block", "Every S3 bucket has all four public-access blocks on", [BUCKET])
def s3_public_access_block(bucket: PolicyResource, stack: Stack, ctx: StackContext) -> Iterator[Problem]:
    blocks = settings_of(bucket, stack, BUCKET_PUBLIC_ACCESS_BLOCK)
    if not any(all(truthy(b.props.get(flag)) for flag in PUBLIC_ACCESS_BLOCKS) for b in blocks):
        yield Problem(
            "not all four S3 public-access blocks are on",
            "an aws.s3.BucketPublicAccessBlock for the bucket with block_public_acls, block_public_policy, "
            "ignore_public_acls and restrict_public_buckets all True",
        )


def _world_ingress(rule: Mapping[str, Any], cidr_keys: tuple[str, ...], protocol_key: str, on_alb: bool) -> list[str]:
    """``[description]`` if ``rule`` admits the whole internet other than to the ALB's web ports, else ``[]``."""
    cidrs = [c for key in cidr_keys for c in _as_list(rule.get(key)) if c in WORLD]
    if not cidrs:
        return []
    low, high = int(rule.get("fromPort") or 0), int(rule.get("toPort") or 0)
    if on_alb and low == high and low in WEB_PORTS and str(rule.get(protocol_key)).lower() in ("tcp", "6"):
        return []
    ports = "all ports" if str(rule.get(protocol_key)) == "-1" else f"ports {low}-{high}"
    return [f"{', '.join(cidrs)} on {ports}"]


def _as_list(value: Any) -> list[Any]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


# Where each kind of resource keeps its ingress rules, and how a rule names its CIDRs and its protocol.
IngressShape = tuple[Callable[[Props], list[Any]], tuple[str, ...], str]
INGRESS: dict[str, IngressShape] = {
    SECURITY_GROUP: (lambda p: list(p.get("ingress") or []), ("cidrBlocks", "ipv6CidrBlocks"), "protocol"),
    SECURITY_GROUP_RULE: (
        lambda p: [p] if p.get("type") == "ingress" else [],
        ("cidrBlocks", "ipv6CidrBlocks"),
        "protocol",
    ),
    SECURITY_GROUP_INGRESS_RULE: (lambda p: [p], ("cidrIpv4", "cidrIpv6"), "ipProtocol"),
}


def _on_alb(resource: PolicyResource, stack: Stack) -> bool:
    """The security group (or the group of the rule) is a load balancer's."""
    is_group = resource.resource_type == SECURITY_GROUP
    groups = {resource.urn} if is_group else {g.urn for g in referenced(resource, "securityGroupId")}
    return any(g.urn in groups for lb in stack.of_type(LOAD_BALANCER) for g in referenced(lb, "securityGroups"))


@linked_rule(
    "sg-no-world-ingress",
    "No security group admits 0.0.0.0/0 or ::/0, except the ALB's on ports 80 and 443",
    INGRESS,
)
def sg_no_world_ingress(resource: PolicyResource, stack: Stack, ctx: StackContext) -> Iterator[Problem]:
    rules_of, cidr_keys, protocol = INGRESS[resource.resource_type]
    on_alb = _on_alb(resource, stack)
    found = [w for rule in rules_of(resource.props) for w in _world_ingress(rule, cidr_keys, protocol, on_alb)]
    if found:
        yield Problem(
            f"admits the whole internet ({'; '.join(found)})",
            "remove that ingress: only the ALB's security group takes the internet, on ports 80 and 443; other "
            "groups admit the ALB's group or the VPC's addresses (infra/network.py)",
        )


@resource_rule(
    "eks-public-endpoint", "The EKS API's public endpoint, if on, admits only the configured CIDRs", [EKS_CLUSTER]
)
def eks_public_endpoint(props: Props, ctx: StackContext) -> Iterator[Problem]:
    vpc = props.get("vpcConfig") or {}
    public = vpc.get("endpointPublicAccess")
    if public is not None and not truthy(public):  # EKS turns the public endpoint on unless told otherwise
        return
    cidrs = list(vpc.get("publicAccessCidrs") or [])
    configured = ctx.settings.cluster.public_access_cidrs
    extra = [c for c in cidrs if c in WORLD or c not in configured]
    if not cidrs or extra:
        yield Problem(
            f"the public endpoint admits {', '.join(extra) if cidrs else '0.0.0.0/0 (no CIDRs: the EKS default)'}, "
            f"beyond the configured {configured or 'none'}",
            "vpc_config public_access_cidrs from the stack setting cluster.public_access_cidrs, or "
            "endpoint_public_access=False (infra/cluster.py)",
        )
