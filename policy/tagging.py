"""Tags: every taggable resource carries the project's tags (the settings' definition, as infra/tier.py uses it)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from policy.rule import Problem, Props, resource_rule
from policy.stack import StackContext

# The pulumi-aws types this program declares that take tags. tests/policy checks the list against pulumi-aws for
# every type in the stacks' renderings, so a new taggable type fails a test until it is added here.
TAGGABLE = frozenset(
    {
        "aws:autoscaling/group:Group",
        "aws:backup/plan:Plan",
        "aws:backup/vault:Vault",
        "aws:cloudwatch/compositeAlarm:CompositeAlarm",
        "aws:cloudwatch/logGroup:LogGroup",
        "aws:cloudwatch/metricAlarm:MetricAlarm",
        "aws:ec2/eip:Eip",
        "aws:ec2/flowLog:FlowLog",
        "aws:ec2/instance:Instance",
        "aws:ec2/internetGateway:InternetGateway",
        "aws:ec2/launchTemplate:LaunchTemplate",
        "aws:ec2/natGateway:NatGateway",
        "aws:ec2/routeTable:RouteTable",
        "aws:ec2/securityGroup:SecurityGroup",
        "aws:ec2/subnet:Subnet",
        "aws:ec2/vpc:Vpc",
        "aws:ec2/vpcEndpoint:VpcEndpoint",
        "aws:eks/accessEntry:AccessEntry",
        "aws:eks/addon:Addon",
        "aws:eks/cluster:Cluster",
        "aws:eks/nodeGroup:NodeGroup",
        "aws:elasticache/replicationGroup:ReplicationGroup",
        "aws:elasticache/subnetGroup:SubnetGroup",
        "aws:fis/experimentTemplate:ExperimentTemplate",
        "aws:iam/instanceProfile:InstanceProfile",
        "aws:iam/openIdConnectProvider:OpenIdConnectProvider",
        "aws:iam/role:Role",
        "aws:kms/key:Key",
        "aws:lb/listener:Listener",
        "aws:lb/listenerRule:ListenerRule",
        "aws:lb/loadBalancer:LoadBalancer",
        "aws:lb/targetGroup:TargetGroup",
        "aws:rds/instance:Instance",
        "aws:rds/parameterGroup:ParameterGroup",
        "aws:rds/subnetGroup:SubnetGroup",
        "aws:s3/bucket:Bucket",
        "aws:scheduler/scheduleGroup:ScheduleGroup",
        "aws:secretsmanager/secret:Secret",
        "aws:sns/topic:Topic",
        "aws:sqs/queue:Queue",
        "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
        "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
        "aws:wafv2/ipSet:IpSet",
        "aws:wafv2/webAcl:WebAcl",
    }
)


def _tags(props: Props) -> Mapping[str, str]:
    tags = props.get("tags") or {}
    if isinstance(tags, Mapping):
        return tags
    return {t.get("key"): t.get("value") for t in tags}  # an Auto Scaling group's: [{key, value, propagateAtLaunch}]


@resource_rule("project-tags", "Every taggable resource carries the project's tags", TAGGABLE)
def project_tags(props: Props, ctx: StackContext) -> Iterator[Problem]:
    tags = _tags(props)
    wrong = sorted(
        f"{k}={tags.get(k)!r}" if k in tags else f"{k} (missing)" for k, v in ctx.tags.items() if tags.get(k) != v
    )
    if wrong:
        expected = ", ".join(f"{k}={v}" for k, v in ctx.tags.items())
        yield Problem(
            f"tags missing or different: {', '.join(wrong)}",
            f"tags={{{expected}, ...}}: the tier's self.tagged(role) (infra/tier.py)",
        )
