"""Network tier: a VPC over three AZs with public, private-app and isolated-data subnets.

The AZs are chosen by ID (the same physical zone in every account; names are shuffled per account), or
pinned with ``network.availability_zone_ids``.

Public subnets hold the ALB and the NAT gateways; app subnets reach the
internet through NAT (one per AZ in prod, so an AZ outage leaves the others
routing); data subnets have no route out at all. S3 traffic from app and data
subnets stays on the AWS network through a gateway endpoint.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict, Unpack

import pulumi
import pulumi_aws as aws

from infra.tier import Tier, assume_role_policy, policy_document
from pynomaly_ops import ports
from pynomaly_ops.settings import ZONE_COUNT
from pynomaly_ops.settings import Network as NetworkSettings

# AZ IDs where EKS creates no control plane (EKS user guide, "VPC and subnet requirements"); use1-az3 also
# lacks most current instance types. By ID: the name that maps to use1-az3 differs from account to account.
NO_EKS_ZONE_IDS = frozenset({"use1-az3", "usw1-az2", "cac1-az3"})
SUBNET_TIERS = ("public", "app", "data")
FLOW_LOG_GROUP_ACTIONS = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
# The AWS Load Balancer Controller picks subnets by these tags: internet-facing load balancers in the public ones,
# internal ones in the private app subnets.
SUBNET_ROLE_TAGS = {"public": {"kubernetes.io/role/elb": "1"}, "app": {"kubernetes.io/role/internal-elb": "1"}}
HTTPS = 443
# What the app instances reach in the data subnets: the database tier's and the cache tier's ports.
DATA_PORTS = {"PostgreSQL": ports.POSTGRES, "Redis": ports.REDIS}


@dataclass(frozen=True)
class NetworkArgs:
    settings: NetworkSettings
    region: str
    logs_kms_key_arn: pulumi.Input[str]
    app_port: int


class RuleSources(TypedDict, total=False):
    """The peers a security-group rule admits (ingress) or reaches (egress)."""

    cidr_blocks: Sequence[pulumi.Input[str]]
    ipv6_cidr_blocks: Sequence[pulumi.Input[str]]
    security_groups: Sequence[pulumi.Input[str]]


def tcp_rule(description: str, port: int, **sources: Unpack[RuleSources]) -> aws.ec2.SecurityGroupIngressArgsDict:
    """A security-group rule for one TCP port (the SDK's ingress and egress rules have the same shape)."""
    return {"description": description, "protocol": "tcp", "from_port": port, "to_port": port, **sources}


def app_egress(data_cidrs: Sequence[str]) -> list[aws.ec2.SecurityGroupIngressArgsDict]:
    """Where the app instances may connect: HTTPS anywhere (the AWS APIs the service, the CloudWatch and SSM agents
    and the boot script's dnf call, through the NAT gateways or the S3 gateway endpoint: no fixed addresses), and
    the database's and the cache's ports in the data subnets only.

    By the data subnets' CIDRs, inline: the data tiers' groups are made after this one (they admit it), and a
    reference to them would need separate SecurityGroupEgressRule resources, which pulumi-aws forbids beside
    inline rules ("may cause rule conflicts, perpetual differences"). The data subnets hold nothing else and
    route nowhere. DNS (the VPC resolver), the instance metadata and the Amazon Time Sync Service need no rule:
    security groups do not filter traffic to them (VPC User Guide, "Security group rules")."""
    data = [tcp_rule(f"{name} in the data subnets", port, cidr_blocks=data_cidrs) for name, port in DATA_PORTS.items()]
    return [tcp_rule("HTTPS to AWS APIs", HTTPS, cidr_blocks=["0.0.0.0/0"]), *data]


class ZoneChoiceError(ValueError):
    """The region cannot give the stack the AZs it asks for."""


def _zone_number(zone_id: str) -> int:
    return int(zone_id.rsplit("-az", 1)[1])


def choose_zones(names: Sequence[str], zone_ids: Sequence[str], pinned: Sequence[str]) -> list[tuple[str, str]]:
    """``(zone ID, zone name)`` of the stack's AZs, from the region's (``names[i]`` is ``zone_ids[i]``): the
    pinned IDs (``network.availability_zone_ids``), else the lowest-numbered IDs EKS supports. By ID, so
    every account of a stack gets the same physical zones."""
    by_id = dict(zip(zone_ids, names, strict=True))
    key = "pynomaly:network.availability_zone_ids"
    if pinned:
        missing = [z for z in pinned if z not in by_id]
        if missing:
            raise ZoneChoiceError(
                f"{key}: {', '.join(missing)} not available in this region; available: {', '.join(sorted(by_id))}"
            )
        unsupported = [z for z in pinned if z in NO_EKS_ZONE_IDS]
        if unsupported:
            raise ZoneChoiceError(f"{key}: {', '.join(unsupported)} cannot hold an EKS control plane; pin others")
        return [(z, by_id[z]) for z in pinned]
    usable = sorted((z for z in by_id if z not in NO_EKS_ZONE_IDS), key=_zone_number)
    if len(usable) < ZONE_COUNT:
        found = ", ".join(usable)
        raise ZoneChoiceError(f"the region has {len(usable)} usable AZs ({found}); the stack needs {ZONE_COUNT}")
    return [(z, by_id[z]) for z in usable[:ZONE_COUNT]]


def subnet_cidrs(vpc_cidr: str) -> dict[str, list[str]]:
    """Nine equal subnets (16ths of the VPC): public, app, data x 3 AZs."""
    blocks = list(ipaddress.ip_network(vpc_cidr).subnets(prefixlen_diff=4))
    n = ZONE_COUNT
    return {tier: [str(b) for b in blocks[i * n : (i + 1) * n]] for i, tier in enumerate(SUBNET_TIERS)}


class Network(Tier):
    TIER = "network"

    vpc_id: pulumi.Output[str]
    vpc_cidr: str
    availability_zones: pulumi.Output[list[str]]  # names, for the APIs that take names (ElastiCache)
    availability_zone_ids: pulumi.Output[list[str]]
    public_subnet_ids: list[pulumi.Output[str]]
    app_subnet_ids: list[pulumi.Output[str]]
    data_subnet_ids: list[pulumi.Output[str]]
    public_subnet_cidrs: list[str]  # where the load balancers' nodes are
    data_subnet_cidrs: list[str]  # where the database and the cache are
    nat_addresses_arn: pulumi.Output[str]  # a WAF IP set of the NAT gateways' public addresses
    alb_security_group_id: pulumi.Output[str]
    app_security_group_id: pulumi.Output[str]

    def __init__(self, stack: str, tags: dict[str, str], args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(stack, tags, opts)
        s = args.settings
        # Regular AZs only: opted-in Local Zones (e.g. us-east-1-bos-1a) are "available" too and sort before
        # us-east-1a, but most of this stack (EKS control plane, ElastiCache, RDS Multi-AZ) cannot run there.
        region_zones = aws.get_availability_zones_output(
            state="available", filters=[{"name": "opt-in-status", "values": ["opt-in-not-required"]}]
        )
        chosen = pulumi.Output.all(region_zones.names, region_zones.zone_ids).apply(
            lambda found: choose_zones(found[0], found[1], s.availability_zone_ids)
        )
        zone_ids = chosen.apply(lambda c: [zone_id for zone_id, _ in c])
        zones = chosen.apply(lambda c: [name for _, name in c])
        self.vpc = aws.ec2.Vpc(
            self.name_of("vpc"),
            cidr_block=s.cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags=self.tagged("vpc"),
            opts=self.child,
        )
        cidrs = subnet_cidrs(s.cidr)
        self.subnets = {tier: self._subnets(tier, cidrs[tier], zone_ids) for tier in SUBNET_TIERS}
        self._public_routes()
        app_tables = self._app_routes(s.nat_gateways == "one_per_az")
        data_table = aws.ec2.RouteTable(
            self.name_of("data-rt"), vpc_id=self.vpc.id, tags=self.tagged("data-rt"), opts=self.child
        )
        for i, subnet in enumerate(self.subnets["data"]):
            aws.ec2.RouteTableAssociation(
                self.name_of(f"data-rta-{i}"), subnet_id=subnet.id, route_table_id=data_table.id, opts=self.child
            )
        aws.ec2.VpcEndpoint(
            self.name_of("s3-endpoint"),
            vpc_id=self.vpc.id,
            service_name=f"com.amazonaws.{args.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[t.id for t in [*app_tables, data_table]],
            tags=self.tagged("s3-endpoint"),
            opts=self.child,
        )
        self._flow_logs(s.flow_logs_retention_days, args.logs_kms_key_arn)
        alb_sg, app_sg = self._edge_security_groups(args.app_port, cidrs["data"])
        self.vpc_id = self.vpc.id
        self.vpc_cidr = s.cidr
        self.availability_zones = zones
        self.availability_zone_ids = zone_ids
        self.public_subnet_ids = [x.id for x in self.subnets["public"]]
        self.app_subnet_ids = [x.id for x in self.subnets["app"]]
        self.data_subnet_ids = [x.id for x in self.subnets["data"]]
        self.public_subnet_cidrs = cidrs["public"]
        self.data_subnet_cidrs = cidrs["data"]
        self.alb_security_group_id = alb_sg.id
        self.app_security_group_id = app_sg.id
        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "vpc_cidr": self.vpc_cidr,
                "availability_zones": self.availability_zones,
                "availability_zone_ids": self.availability_zone_ids,
                "public_subnet_ids": self.public_subnet_ids,
                "app_subnet_ids": self.app_subnet_ids,
                "data_subnet_ids": self.data_subnet_ids,
                "public_subnet_cidrs": self.public_subnet_cidrs,
                "data_subnet_cidrs": self.data_subnet_cidrs,
                "alb_security_group_id": self.alb_security_group_id,
                "app_security_group_id": self.app_security_group_id,
            }
        )

    def _subnets(self, tier: str, cidrs: list[str], zone_ids: pulumi.Output[list[str]]) -> list[aws.ec2.Subnet]:
        return [
            aws.ec2.Subnet(
                self.name_of(f"{tier}-{i}"),
                vpc_id=self.vpc.id,
                cidr_block=cidr,
                availability_zone_id=zone_ids[i],
                map_public_ip_on_launch=False,
                tags=self.tagged(f"{tier}-{i}", SubnetTier=tier, **SUBNET_ROLE_TAGS.get(tier, {})),
                opts=self.child,
            )
            for i, cidr in enumerate(cidrs)
        ]

    def _public_routes(self) -> None:
        igw = aws.ec2.InternetGateway(self.name_of("igw"), vpc_id=self.vpc.id, tags=self.tagged("igw"), opts=self.child)
        table = aws.ec2.RouteTable(
            self.name_of("public-rt"),
            vpc_id=self.vpc.id,
            routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": igw.id}],
            tags=self.tagged("public-rt"),
            opts=self.child,
        )
        for i, subnet in enumerate(self.subnets["public"]):
            aws.ec2.RouteTableAssociation(
                self.name_of(f"public-rta-{i}"), subnet_id=subnet.id, route_table_id=table.id, opts=self.child
            )

    def _app_routes(self, nat_per_az: bool) -> list[aws.ec2.RouteTable]:
        nats, addresses = [], []
        for i in range(ZONE_COUNT if nat_per_az else 1):
            eip = aws.ec2.Eip(
                self.name_of(f"nat-eip-{i}"), domain="vpc", tags=self.tagged(f"nat-eip-{i}"), opts=self.child
            )
            addresses.append(eip.public_ip.apply(lambda ip: f"{ip}/32"))
            nats.append(
                aws.ec2.NatGateway(
                    self.name_of(f"nat-{i}"),
                    allocation_id=eip.id,
                    subnet_id=self.subnets["public"][i].id,
                    tags=self.tagged(f"nat-{i}"),
                    opts=self.child,
                )
            )
        tables = []
        for i, subnet in enumerate(self.subnets["app"]):
            nat = nats[i % len(nats)]  # each AZ uses its own NAT when there is one
            table = aws.ec2.RouteTable(
                self.name_of(f"app-rt-{i}"),
                vpc_id=self.vpc.id,
                routes=[{"cidr_block": "0.0.0.0/0", "nat_gateway_id": nat.id}],
                tags=self.tagged(f"app-rt-{i}"),
                opts=self.child,
            )
            aws.ec2.RouteTableAssociation(
                self.name_of(f"app-rta-{i}"), subnet_id=subnet.id, route_table_id=table.id, opts=self.child
            )
            tables.append(table)
        self._nat_addresses(addresses)
        return tables

    def _nat_addresses(self, addresses: list[pulumi.Output[str]]) -> None:
        """The VPC's own public addresses, as a WAF IP set: what the cluster's pods (Locust's workers among them)
        look like to the ALBs, which the web ACLs' per-address limit leaves out (they are still limited per key)."""
        nat_set = aws.wafv2.IpSet(
            self.name_of("nat-addresses"),
            scope="REGIONAL",
            ip_address_version="IPV4",
            addresses=addresses,
            description="this VPC's NAT gateways: not limited per address by the web ACLs",
            tags=self.tagged("nat-addresses"),
            opts=self.child,
        )
        self.nat_addresses_arn = nat_set.arn

    def _flow_logs(self, retention_days: int, kms_key_arn: pulumi.Input[str]) -> None:
        group = aws.cloudwatch.LogGroup(
            self.name_of("flow-logs"),
            name=f"/pynomaly/{self.stack}/vpc-flow-logs",
            retention_in_days=retention_days,
            kms_key_id=kms_key_arn,
            tags=self.tagged("flow-logs"),
            opts=self.child,
        )
        role = aws.iam.Role(
            self.name_of("flow-logs-role"),
            assume_role_policy=assume_role_policy("vpc-flow-logs.amazonaws.com"),
            tags=self.tagged("flow-logs-role"),
            opts=self.child,
        )
        aws.iam.RolePolicy(
            self.name_of("flow-logs-write"),
            role=role.id,
            # The permissions the VPC Flow Logs user guide ("IAM role for publishing flow logs to CloudWatch
            # Logs") requires. DescribeLogGroups lists groups, so it cannot be scoped to this one.
            policy=policy_document(
                {
                    "Effect": "Allow",
                    "Action": FLOW_LOG_GROUP_ACTIONS,
                    "Resource": [group.arn, pulumi.Output.concat(group.arn, ":*")],
                },
                {"Effect": "Allow", "Action": ["logs:DescribeLogGroups"], "Resource": ["*"]},
            ),
            opts=self.child,
        )
        aws.ec2.FlowLog(
            self.name_of("flow-log"),
            vpc_id=self.vpc.id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=group.arn,
            iam_role_arn=role.arn,
            max_aggregation_interval=60,
            tags=self.tagged("flow-log"),
            opts=self.child,
        )

    def _edge_security_groups(
        self, app_port: int, data_cidrs: list[str]
    ) -> tuple[aws.ec2.SecurityGroup, aws.ec2.SecurityGroup]:
        """The ALB's group (HTTPS/HTTP from anywhere, out to the app port) and
        the app instances' (the app port from the ALB only; out, see
        :func:`app_egress`). They live here, before either tier, because the
        data tiers admit the app group and the app's IAM policy names the data
        tiers' resources.

        Security groups here are auto-named (the Name tag carries the readable
        name): a new description or VPC replaces a group, the replacement is
        created first, and a fixed group name would collide with the old one."""
        alb = aws.ec2.SecurityGroup(
            self.name_of("alb-sg"),
            description="ALB: HTTPS and HTTP (redirect only) from the internet",
            vpc_id=self.vpc.id,
            ingress=[
                tcp_rule(f"{proto} from the internet", port, cidr_blocks=["0.0.0.0/0"], ipv6_cidr_blocks=["::/0"])
                for proto, port in (("HTTPS", HTTPS), ("HTTP", 80))
            ],
            egress=[tcp_rule("to the app port inside the VPC", app_port, cidr_blocks=[self.vpc.cidr_block])],
            tags=self.tagged("alb-sg"),
            opts=self.child,
        )
        app = aws.ec2.SecurityGroup(
            self.name_of("app-sg"),
            description="App instances: the app port from the ALB only",
            vpc_id=self.vpc.id,
            ingress=[tcp_rule("from the ALB", app_port, security_groups=[alb.id])],
            egress=app_egress(data_cidrs),
            tags=self.tagged("app-sg"),
            opts=self.child,
        )
        return alb, app

    def service_security_group(
        self, owner: Tier, role: str, port: int, sources: Sequence[pulumi.Input[str]], description: str
    ) -> aws.ec2.SecurityGroup:
        """A security group for a data service: ``port`` open to ``sources``
        (security group ids) only, nothing else in or out."""
        return aws.ec2.SecurityGroup(
            owner.name_of(role),
            description=description,
            vpc_id=self.vpc.id,
            ingress=[tcp_rule(f"{description}: from allowed callers", port, security_groups=sources)],
            egress=[],
            tags=owner.tagged(role),
            opts=owner.child,
        )
