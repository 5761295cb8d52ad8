"""Network tier: VPC over 3 AZs, subnets per tier, NAT, flow logs, S3 endpoint."""

from __future__ import annotations

import ipaddress

import pytest
from infra_helpers import NO_CLUSTER, REQUIRED, inputs, one, rendered, rid

from infra import cache, database
from infra.network import NO_EKS_ZONE_IDS, ZoneChoiceError, choose_zones
from pynomaly_cli.offline import OfflineError
from pynomaly_ops import settings as stack_settings

TIERS = ("public", "app", "data")


def _subnets(r, stack, tier):
    return [inputs(r, f"{stack}-network-{tier}-{i}") for i in range(3)]


def test_vpc_uses_the_stack_cidr_with_dns(r, stack, cfg):
    vpc = one(r, "aws:ec2/vpc:Vpc").plain_inputs
    assert vpc["cidrBlock"] == cfg.network.cidr
    assert vpc["enableDnsHostnames"] and vpc["enableDnsSupport"]


def test_zones_are_regular_azs_not_local_zones(r):
    # Opted-in Local Zones are "available" and sort first (us-east-1-bos-1a < us-east-1a); the stack cannot run there.
    (lookup,) = [c for c in r.calls if c["token"] == "aws:index/getAvailabilityZones:getAvailabilityZones"]
    assert lookup["args"]["state"] == "available"
    assert {"name": "opt-in-status", "values": ["opt-in-not-required"]} in lookup["args"]["filters"]


def test_three_subnets_per_tier_one_per_az_inside_the_vpc(r, stack, cfg):
    subnets = r.of_type("aws:ec2/subnet:Subnet")
    assert len(subnets) == 9
    vpc = ipaddress.ip_network(cfg.network.cidr)
    blocks = []
    for tier in TIERS:
        tier_subnets = _subnets(r, stack, tier)
        # by ID, lowest first, skipping use1-az3 (no EKS); the mock's account maps names to IDs out of order
        assert [s["availabilityZoneId"] for s in tier_subnets] == ["use1-az1", "use1-az2", "use1-az4"]
        assert all("availabilityZone" not in s for s in tier_subnets)
        assert all(s["tags"]["SubnetTier"] == tier and not s["mapPublicIpOnLaunch"] for s in tier_subnets)
        blocks += [ipaddress.ip_network(s["cidrBlock"]) for s in tier_subnets]
    assert all(b.subnet_of(vpc) for b in blocks)
    assert not any(a.overlaps(b) for i, a in enumerate(blocks) for b in blocks[i + 1 :])


def test_nat_gateway_per_az_in_prod_one_in_dev(r, stack, cfg):
    nats = r.of_type("aws:ec2/natGateway:NatGateway")
    expected = 3 if cfg.network.nat_gateways == "one_per_az" else 1
    assert len(nats) == expected
    if stack == "prod":
        assert expected == 3
    if stack == "dev":
        assert expected == 1
    public_ids = {rid(f"{stack}-network-public-{i}") for i in range(3)}
    assert {n.plain_inputs["subnetId"] for n in nats} <= public_ids


def test_app_subnets_route_out_through_nat_in_their_own_az(r, stack, cfg):
    nat_ids = [rid(f"{stack}-network-nat-{i}") for i in range(len(r.of_type("aws:ec2/natGateway:NatGateway")))]
    for i in range(3):
        table = inputs(r, f"{stack}-network-app-rt-{i}")
        (route,) = table["routes"]
        assert route["cidrBlock"] == "0.0.0.0/0"
        assert route["natGatewayId"] == nat_ids[i % len(nat_ids)]
        assoc = inputs(r, f"{stack}-network-app-rta-{i}")
        assert assoc["subnetId"] == rid(f"{stack}-network-app-{i}")
        assert assoc["routeTableId"] == rid(f"{stack}-network-app-rt-{i}")


def test_data_subnets_have_no_route_out(r, stack):
    assert not inputs(r, f"{stack}-network-data-rt").get("routes")
    for i in range(3):
        assert inputs(r, f"{stack}-network-data-rta-{i}")["routeTableId"] == rid(f"{stack}-network-data-rt")


def test_public_subnets_route_to_the_internet_gateway(r, stack):
    (route,) = inputs(r, f"{stack}-network-public-rt")["routes"]
    assert route == {"cidrBlock": "0.0.0.0/0", "gatewayId": rid(f"{stack}-network-igw")}


def test_flow_logs_capture_all_traffic_to_an_encrypted_log_group(r, stack, cfg):
    flow = one(r, "aws:ec2/flowLog:FlowLog").plain_inputs
    assert flow["trafficType"] == "ALL"
    assert flow["vpcId"] == rid(f"{stack}-network-vpc")
    assert flow["logDestinationType"] == "cloud-watch-logs"
    group = r.named(f"{stack}-network-flow-logs")
    assert flow["logDestination"] == group.state["arn"]
    assert group.plain_inputs["retentionInDays"] == cfg.network.flow_logs_retention_days
    assert group.plain_inputs["kmsKeyId"] == r.named(f"{stack}-keys-logs").state["arn"]


def test_s3_gateway_endpoint_serves_app_and_data_subnets(r, stack, cfg):
    endpoint = one(r, "aws:ec2/vpcEndpoint:VpcEndpoint").plain_inputs
    assert endpoint["vpcEndpointType"] == "Gateway"
    assert endpoint["serviceName"] == f"com.amazonaws.{cfg.region}.s3"
    expected = {rid(f"{stack}-network-app-rt-{i}") for i in range(3)} | {rid(f"{stack}-network-data-rt")}
    assert set(endpoint["routeTableIds"]) == expected


def test_app_security_group_admits_only_the_alb(r, stack, cfg):
    app = inputs(r, f"{stack}-network-app-sg")
    (rule,) = app["ingress"]
    assert rule["securityGroups"] == [rid(f"{stack}-network-alb-sg")]
    assert rule["fromPort"] == rule["toPort"] == cfg.fleet.app_port
    assert not rule.get("cidrBlocks")
    alb = inputs(r, f"{stack}-network-alb-sg")
    assert sorted(rule["fromPort"] for rule in alb["ingress"]) == [80, 443]
    (egress,) = alb["egress"]
    assert egress["fromPort"] == egress["toPort"] == cfg.fleet.app_port
    assert egress["cidrBlocks"] == [cfg.network.cidr]


def test_app_instances_reach_https_anywhere_and_the_data_ports_in_the_data_subnets_only(r, stack):
    """Issue 22: no egress on every port to anywhere. Each rule names one TCP port; only HTTPS (the AWS APIs,
    through NAT or the S3 endpoint) leaves the VPC; PostgreSQL and Redis go to the data subnets. DNS, the
    instance metadata and Amazon Time Sync need no rule (security groups do not filter them)."""
    egress = inputs(r, f"{stack}-network-app-sg")["egress"]
    assert all(rule["protocol"] == "tcp" and rule["fromPort"] == rule["toPort"] for rule in egress), egress
    assert not any(rule.get("ipv6CidrBlocks") or rule.get("securityGroups") for rule in egress)
    assert [rule["fromPort"] for rule in egress if "0.0.0.0/0" in rule["cidrBlocks"]] == [443]
    data = {s["cidrBlock"] for s in _subnets(r, stack, "data")}
    inside = {rule["fromPort"]: set(rule["cidrBlocks"]) for rule in egress if rule["fromPort"] != 443}
    assert inside == {database.PORT: data, cache.PORT: data}


def test_app_instances_reach_each_data_tier_where_it_lives_on_the_port_it_admits_them(r, stack):
    """The egress rules and the data tiers' groups agree: a tier on another port or subnet breaks this."""
    app = rid(f"{stack}-network-app-sg")
    reach = {
        (rule["fromPort"], cidr)
        for rule in inputs(r, f"{stack}-network-app-sg")["egress"]
        for cidr in rule["cidrBlocks"]
    }
    data_ids = [rid(f"{stack}-network-data-{i}") for i in range(3)]
    for tier in ("database", "cache"):
        assert inputs(r, f"{stack}-{tier}-subnets")["subnetIds"] == data_ids, tier
        (rule,) = inputs(r, f"{stack}-{tier}-sg")["ingress"]
        assert app in rule["securityGroups"]
        assert {(rule["fromPort"], s["cidrBlock"]) for s in _subnets(r, stack, "data")} <= reach, tier


def test_app_security_group_rules_are_all_inline(r, stack):
    """pulumi-aws ec2.SecurityGroup: inline rules beside vpc.SecurityGroupEgressRule/IngressRule (or
    ec2.SecurityGroupRule) resources on the same group "may cause rule conflicts, perpetual differences, and result
    in rules being overwritten"."""
    separate = ("aws:vpc/securityGroupEgressRule:", "aws:vpc/securityGroupIngressRule:", "aws:ec2/securityGroupRule:")
    groups = {rid(f"{stack}-network-{role}") for role in ("app-sg", "alb-sg")}
    rules = [x for x in r.resources if x.type.startswith(separate)]
    assert [x.name for x in rules if x.plain_inputs.get("securityGroupId") in groups] == []


def test_zone_names_follow_the_chosen_ids_where_an_api_takes_names(r, cfg):
    # the mock's account: us-east-1c is use1-az1, us-east-1d use1-az2, us-east-1a use1-az4
    redis = one(r, "aws:elasticache/replicationGroup:ReplicationGroup").plain_inputs
    names = [f"{cfg.region}{z}" for z in "cda"]
    assert redis["preferredCacheClusterAzs"] == [names[i % 3] for i in range(1 + cfg.cache.replicas)]
    assert r.outputs["availability_zone_ids"] == ["use1-az1", "use1-az2", "use1-az4"]
    assert r.outputs["availability_zones"] == names


REGION = {"names": [f"us-east-1{z}" for z in "abcdef"], "ids": [f"use1-az{i}" for i in (4, 6, 1, 2, 3, 5)]}


def test_choose_zones_by_id_skips_the_zones_without_eks_and_keeps_a_pin():
    assert "use1-az3" in NO_EKS_ZONE_IDS
    chosen = choose_zones(REGION["names"], REGION["ids"], [])
    assert chosen == [("use1-az1", "us-east-1c"), ("use1-az2", "us-east-1d"), ("use1-az4", "us-east-1a")]
    pinned = choose_zones(REGION["names"], REGION["ids"], ["use1-az6", "use1-az5", "use1-az1"])
    assert pinned == [("use1-az6", "us-east-1b"), ("use1-az5", "us-east-1f"), ("use1-az1", "us-east-1c")]
    # numeric, not text, order: az10 comes after az2
    ids = ["use1-az10", "use1-az2", "use1-az1", "use1-az4"]
    assert [z for z, _ in choose_zones(["w", "x", "y", "z"], ids, [])] == ["use1-az1", "use1-az2", "use1-az4"]


@pytest.mark.parametrize(
    ("pinned", "says"),
    [
        (["use1-az1", "use1-az2", "use1-az9"], "use1-az9 not available in this region"),
        (["use1-az1", "use1-az2", "use1-az3"], "use1-az3 cannot hold an EKS control plane"),
    ],
)
def test_a_pin_the_region_cannot_honour_is_refused_naming_the_setting(pinned, says):
    with pytest.raises(ZoneChoiceError, match=r"pynomaly:network\.availability_zone_ids") as err:
        choose_zones(REGION["names"], REGION["ids"], pinned)
    assert says in str(err.value)


def test_a_region_with_too_few_usable_zones_is_refused():
    with pytest.raises(ZoneChoiceError, match="2 usable AZs"):
        choose_zones(["a", "b", "c"], ["use1-az1", "use1-az3", "use1-az2"], [])


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (["use1-az1", "use1-az1", "use1-az2"], "3 different AZ IDs"),
        (["us-east-1a", "use1-az1", "use1-az2"], "not AZ IDs"),
    ],
)
def test_the_pin_setting_is_validated(value, says):
    stack_settings.build("dev", REQUIRED)  # valid without the pin
    with pytest.raises(stack_settings.SettingsError, match=f"network.availability_zone_ids: .*{says}"):
        stack_settings.build("dev", {**REQUIRED, "network.availability_zone_ids": value})


def test_a_pinned_stack_puts_its_subnets_in_the_pinned_zones():
    pin = ["use1-az6", "use1-az5", "use1-az1"]
    r = rendered("dev", {**NO_CLUSTER, "pynomaly:network.availability_zone_ids": pin})
    assert [inputs(r, f"dev-network-app-{i}")["availabilityZoneId"] for i in range(3)] == pin
    with pytest.raises(OfflineError, match="use1-az9 not available"):
        rendered("dev", {**NO_CLUSTER, "pynomaly:network.availability_zone_ids": ["use1-az1", "use1-az2", "use1-az9"]})
