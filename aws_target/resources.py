"""The stack's resources as the AWS APIs describe them: the fleet's group and its load balancer targets, the
database's primary, the cache's node group, the HTTPS listener. Read-only; the faults and probes build on it.

The local stack names its API instances ``api-0``, ``api-1``...; an Auto Scaling group's instances have no
stable names, so here ``api-N`` is the N-th in-service instance in instance-id order: a drill written for the
local stack picks one the same way.
"""

from __future__ import annotations

from typing import Any

from aws_target.target import Target
from pynomaly_ops import outputs as keys

IN_SERVICE = "InService"
HEALTHY = "healthy"
INSTANCE_PREFIX = "api-"
NOT_REGISTERED = "unused"  # what the target group says of an instance it does not know


class ResourceError(RuntimeError):
    """A resource is missing or not in the shape the stack declares."""


# --- the fleet: the Auto Scaling group and its target group ------------------------------------------------
def group(t: Target) -> dict[str, Any]:
    name = t.value(keys.ASG_NAME)
    found = t.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
    if not found:
        raise ResourceError(f"no Auto Scaling group {name!r} in {t.region}")
    return found[0]


def in_service(g: dict[str, Any]) -> list[str]:
    """The group's in-service instances, in instance-id order."""
    return sorted(i["InstanceId"] for i in g["Instances"] if i["LifecycleState"] == IN_SERVICE)


def instance_named(g: dict[str, Any], name: str) -> dict[str, Any]:
    """``api-N``: the N-th in-service instance (see the module's docstring)."""
    ids = in_service(g)
    index = name.removeprefix(INSTANCE_PREFIX)
    if not (name.startswith(INSTANCE_PREFIX) and index.isdigit() and int(index) < len(ids)):
        names = ", ".join(f"{INSTANCE_PREFIX}{i}" for i in range(len(ids)))
        raise ResourceError(f"no API instance {name!r}: group {g['AutoScalingGroupName']} has {names or 'none'}")
    return next(i for i in g["Instances"] if i["InstanceId"] == ids[int(index)])


def target_group_arn(g: dict[str, Any]) -> str:
    """The load balancer's target group the group registers its instances in (infra/app_fleet.py: one)."""
    arns = g.get("TargetGroupARNs", [])
    if len(arns) != 1:
        raise ResourceError(f"group {g['AutoScalingGroupName']} has {len(arns)} target groups, not the stack's one")
    return str(arns[0])


def target_states(t: Target, g: dict[str, Any], ids: list[str] | None = None) -> dict[str, str]:
    """Instances ``ids`` (default: the group's) and their states in the target group (``healthy``,
    ``unhealthy``, ``draining``, ``initial``, ``unused``...)."""
    ids = [i["InstanceId"] for i in g["Instances"]] if ids is None else ids
    if not ids:
        return {}
    health = t.client("elbv2").describe_target_health(
        TargetGroupArn=target_group_arn(g), Targets=[{"Id": i} for i in ids]
    )["TargetHealthDescriptions"]
    states = {d["Target"]["Id"]: d["TargetHealth"]["State"] for d in health}
    return {i: states.get(i, NOT_REGISTERED) for i in ids}


def healthy_in_service(t: Target, g: dict[str, Any]) -> list[str]:
    """The in-service instances the load balancer sends traffic to."""
    states = target_states(t, g)
    return [i for i in in_service(g) if states[i] == HEALTHY]


# --- the database and the cache ------------------------------------------------------------------------------
def db_instance(t: Target) -> dict[str, Any]:
    """The RDS primary (Multi-AZ: the writer and its standby in another zone, one instance to the API)."""
    identifier = t.value(keys.DB_PRIMARY_IDENTIFIER)
    return dict(t.client("rds").describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0])


def replication_group(t: Target) -> dict[str, Any]:
    group_id = t.value(keys.REDIS_REPLICATION_GROUP_ID)
    found = t.client("elasticache").describe_replication_groups(ReplicationGroupId=group_id)["ReplicationGroups"]
    return dict(found[0])


def node_group(rg: dict[str, Any]) -> dict[str, Any]:
    """The group's one node group (cluster mode off: a primary and its replicas, infra/cache.py)."""
    groups = rg.get("NodeGroups", [])
    if len(groups) != 1:
        raise ResourceError(f"replication group {rg['ReplicationGroupId']} has {len(groups)} node groups, not one")
    return dict(groups[0])


def primary_member(rg: dict[str, Any]) -> str:
    """The cache cluster (node) that is the primary."""
    members = node_group(rg)["NodeGroupMembers"]
    primary = next((m["CacheClusterId"] for m in members if m.get("CurrentRole") == "primary"), None)
    if primary is None:
        raise ResourceError(f"no member of replication group {rg['ReplicationGroupId']} is the primary now")
    return str(primary)


# --- the load balancer's HTTPS listener -----------------------------------------------------------------------
def default_actions(t: Target) -> list[dict[str, Any]]:
    arn = t.value(keys.HTTPS_LISTENER_ARN)
    return list(t.client("elbv2").describe_listeners(ListenerArns=[arn])["Listeners"][0]["DefaultActions"])
