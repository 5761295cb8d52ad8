"""Advisory: what helps to diagnose an incident, reported without blocking a deployment."""

from __future__ import annotations

from collections.abc import Iterator

from pulumi_policy import PolicyResource

from policy.resource_types import FLOW_LOG, RDS_INSTANCE, VPC
from policy.rule import Problem, Props, Stack, linked_rule, resource_rule, truthy
from policy.stack import StackContext


@resource_rule("rds-performance-insights", "RDS instances record Performance Insights", [RDS_INSTANCE], advisory=True)
def rds_performance_insights(props: Props, ctx: StackContext) -> Iterator[Problem]:
    if not truthy(props.get("performanceInsightsEnabled")):
        yield Problem(
            "Performance Insights is off: a slow query leaves no trace",
            "performance_insights_enabled=True with performance_insights_kms_key_id (infra/database.py)",
        )


@resource_rule("rds-enhanced-monitoring", "RDS instances send enhanced monitoring", [RDS_INSTANCE], advisory=True)
def rds_enhanced_monitoring(props: Props, ctx: StackContext) -> Iterator[Problem]:
    if not props.get("monitoringInterval"):
        yield Problem(
            "enhanced monitoring is off: no OS-level metrics of the database host",
            "monitoring_interval (stack setting db.monitoring_interval_s) and monitoring_role_arn",
        )


@linked_rule("vpc-flow-logs", "Every VPC records flow logs", [VPC], advisory=True)
def vpc_flow_logs(vpc: PolicyResource, stack: Stack, ctx: StackContext) -> Iterator[Problem]:
    if not stack.referencing(vpc, FLOW_LOG, "vpcId"):
        yield Problem(
            "has no flow log: traffic to and from it leaves no record",
            "an aws.ec2.FlowLog with vpc_id=<the VPC> and traffic_type='ALL' (infra/network.py)",
        )
