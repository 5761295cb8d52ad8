"""Network tier: VPC over 3 AZs, subnets per tier, NAT, flow logs, S3 endpoint."""

from __future__ import annotations

import ipaddress

from infra_helpers import inputs, one, rid

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
        assert sorted(s["availabilityZone"] for s in tier_subnets) == [f"{cfg.region}{z}" for z in "abc"]
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
