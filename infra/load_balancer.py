"""Load balancer tier: the internet-facing ALB, its TLS listeners, WAF and access logs.

HTTP only redirects to HTTPS; HTTPS uses a TLS 1.2+ policy. The maintenance
switch (``lb.maintenance_mode``, 002 "Redirect traffic to maintenance page")
turns the HTTPS default action into a fixed 503 page; flipping it back
restores forwarding, with the fleet untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.storage import SecureBucketArgs, bucket_name, secure_bucket
from infra.tier import Tier
from pynomaly_ops.environment import INTERNAL_PATHS, INTERNAL_PREFIXES
from pynomaly_ops.settings import LoadBalancer as LoadBalancerSettings

HEALTH_CHECK_PATH = "/health"
LOG_PREFIX = "alb"
MAINTENANCE_PAGE = (
    "<!doctype html><html><head><title>Pynomaly maintenance</title></head><body>"
    "<h1>Pynomaly is down for maintenance</h1><p>We will be back shortly.</p></body></html>"
)
# AWS managed rule groups, in evaluation order after the rate limit (003 WAF).
MANAGED_RULE_GROUPS = (
    "AWSManagedRulesAmazonIpReputationList",
    "AWSManagedRulesCommonRuleSet",
    "AWSManagedRulesKnownBadInputsRuleSet",
    "AWSManagedRulesSQLiRuleSet",
)
# The common rule set's SizeRestrictions_BODY blocks any body over 8 KB, but a /detect request carries a whole
# series (up to the service's PYNOMALY_MAX_BODY_BYTES, 16 MiB): a few hundred points already exceed it. The rule
# only counts; the service enforces its own body limit (413).
COUNTED_RULES = {"AWSManagedRulesCommonRuleSet": ("SizeRestrictions_BODY",)}


INTERNAL_PAGES_PRIORITY = 1
NOT_PUBLIC: aws.lb.ListenerRuleActionFixedResponseArgsDict = {
    "content_type": "application/json",
    "status_code": "404",
    "message_body": '{"error":{"code":"not_found","message":"not served through the load balancer"}}',
}


def internal_page_patterns() -> list[str]:
    """ALB path patterns for the instance's own pages: exact paths, and each prefix with what follows it."""
    return [*INTERNAL_PATHS, *(f"{prefix}*" for prefix in INTERNAL_PREFIXES)]


@dataclass(frozen=True)
class LoadBalancerArgs:
    settings: LoadBalancerSettings
    vpc_id: pulumi.Input[str]
    security_group_id: pulumi.Input[str]
    public_subnet_ids: Sequence[pulumi.Input[str]]
    app_port: int
    account_id: pulumi.Input[str]
    noncurrent_version_days: int


def _visibility(metric: str) -> aws.wafv2.WebAclVisibilityConfigArgsDict:
    return {"cloudwatch_metrics_enabled": True, "metric_name": metric, "sampled_requests_enabled": True}


def _managed_group(group: str) -> aws.wafv2.WebAclRuleStatementManagedRuleGroupStatementArgsDict:
    statement: aws.wafv2.WebAclRuleStatementManagedRuleGroupStatementArgsDict = {"name": group, "vendor_name": "AWS"}
    if group in COUNTED_RULES:
        statement["rule_action_overrides"] = [
            {"name": rule, "action_to_use": {"count": {}}} for rule in COUNTED_RULES[group]
        ]
    return statement


def waf_rules(rate_limit: int) -> list[aws.wafv2.WebAclRuleArgsDict]:
    rate: aws.wafv2.WebAclRuleArgsDict = {
        "name": "rate-limit-per-ip",
        "priority": 0,
        "action": {"block": {}},
        "statement": {"rate_based_statement": {"limit": rate_limit, "aggregate_key_type": "IP"}},
        "visibility_config": _visibility("rate-limit-per-ip"),
    }
    managed: list[aws.wafv2.WebAclRuleArgsDict] = [
        {
            "name": group,
            "priority": i,
            "override_action": {"none": {}},
            "statement": {"managed_rule_group_statement": _managed_group(group)},
            "visibility_config": _visibility(group),
        }
        for i, group in enumerate(MANAGED_RULE_GROUPS, start=1)
    ]
    return [rate, *managed]


class LoadBalancer(Tier):
    TIER = "lb"

    url: pulumi.Output[str]
    dns_name: pulumi.Output[str]
    arn_suffix: pulumi.Output[str]
    target_group_arn: pulumi.Output[str]
    target_group_arn_suffix: pulumi.Output[str]
    logs_bucket: pulumi.Output[str]

    def __init__(
        self, stack: str, tags: dict[str, str], args: LoadBalancerArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__(stack, tags, opts)
        s = args.settings
        logs_bucket, logs_policy = self._access_log_bucket(args)
        alb = aws.lb.LoadBalancer(
            self.name_of("alb"),
            name=self.name_of("alb"),
            internal=False,
            load_balancer_type="application",
            security_groups=[args.security_group_id],
            subnets=args.public_subnet_ids,
            drop_invalid_header_fields=True,
            enable_deletion_protection=s.deletion_protection,
            desync_mitigation_mode="defensive",
            access_logs={"bucket": logs_bucket.bucket, "prefix": LOG_PREFIX, "enabled": True},
            tags=self.tagged("alb"),
            opts=pulumi.ResourceOptions.merge(self.child, pulumi.ResourceOptions(depends_on=[logs_policy])),
        )
        # Auto-named (``<stack>-lb-app-<random>``): a change of port, protocol or VPC replaces the target group, and
        # the replacement is created before the old one goes, which a fixed name would collide with.
        target_group = aws.lb.TargetGroup(
            self.name_of("app"),
            port=args.app_port,
            protocol="HTTP",
            target_type="instance",
            vpc_id=args.vpc_id,
            deregistration_delay=30,
            health_check={
                "path": HEALTH_CHECK_PATH,
                "protocol": "HTTP",
                "matcher": "200",
                "interval": 15,
                "timeout": 5,
                "healthy_threshold": 2,
                "unhealthy_threshold": 3,
            },
            tags=self.tagged("app"),
            opts=self.child,
        )
        https = aws.lb.Listener(
            self.name_of("https"),
            load_balancer_arn=alb.arn,
            port=443,
            protocol="HTTPS",
            ssl_policy=s.ssl_policy,
            certificate_arn=s.certificate_arn,
            default_actions=[self._default_action(s.maintenance_mode, target_group)],
            tags=self.tagged("https"),
            opts=self.child,
        )
        # The instance's own pages are not public (pynomaly_ops/environment.py): answered 404 before any
        # forward, maintenance or not. Five values, two of them wildcards: within the ALB's per-rule quotas.
        aws.lb.ListenerRule(
            self.name_of("internal-pages"),
            listener_arn=https.arn,
            priority=INTERNAL_PAGES_PRIORITY,
            conditions=[{"path_pattern": {"values": internal_page_patterns()}}],
            actions=[{"type": "fixed-response", "fixed_response": NOT_PUBLIC}],
            tags=self.tagged("internal-pages"),
            opts=self.child,
        )
        aws.lb.Listener(
            self.name_of("http"),
            load_balancer_arn=alb.arn,
            port=80,
            protocol="HTTP",
            default_actions=[
                {"type": "redirect", "redirect": {"protocol": "HTTPS", "port": "443", "status_code": "HTTP_301"}}
            ],
            tags=self.tagged("http"),
            opts=self.child,
        )
        acl = aws.wafv2.WebAcl(
            self.name_of("waf"),
            name=self.name_of("waf"),
            scope="REGIONAL",
            default_action={"allow": {}},
            rules=waf_rules(s.waf_rate_limit),
            visibility_config=_visibility(self.name_of("waf")),
            tags=self.tagged("waf"),
            opts=self.child,
        )
        aws.wafv2.WebAclAssociation(
            self.name_of("waf-association"), resource_arn=alb.arn, web_acl_arn=acl.arn, opts=self.child
        )
        self.url = pulumi.Output.concat("https://", alb.dns_name)
        self.dns_name = alb.dns_name
        self.arn_suffix = alb.arn_suffix
        self.target_group_arn = target_group.arn
        self.target_group_arn_suffix = target_group.arn_suffix
        self.logs_bucket = logs_bucket.bucket
        self.register_outputs(
            {
                "url": self.url,
                "dns_name": self.dns_name,
                "arn_suffix": self.arn_suffix,
                "target_group_arn": self.target_group_arn,
                "target_group_arn_suffix": self.target_group_arn_suffix,
                "logs_bucket": self.logs_bucket,
            }
        )

    @staticmethod
    def _default_action(maintenance: bool, target_group: aws.lb.TargetGroup) -> aws.lb.ListenerDefaultActionArgsDict:
        if maintenance:
            return {
                "type": "fixed-response",
                "fixed_response": {"content_type": "text/html", "status_code": "503", "message_body": MAINTENANCE_PAGE},
            }
        return {"type": "forward", "target_group_arn": target_group.arn}

    def _access_log_bucket(self, args: LoadBalancerArgs) -> tuple[aws.s3.Bucket, aws.s3.BucketPolicy]:
        """ALB access logs need SSE-S3 and a policy letting ELB log delivery write."""
        elb_account = aws.elb.get_service_account_output().arn

        def log_delivery(bucket_arn: pulumi.Output[str]) -> list[dict]:
            prefix = pulumi.Output.concat(bucket_arn, f"/{LOG_PREFIX}/AWSLogs/", args.account_id, "/*")
            return [
                {
                    # Regions opened since August 2022 deliver as this service principal...
                    "Sid": "ElbLogDelivery",
                    "Effect": "Allow",
                    "Principal": {"Service": "logdelivery.elasticloadbalancing.amazonaws.com"},
                    "Action": "s3:PutObject",
                    "Resource": prefix,
                },
                {
                    # ...older ones (us-east-1 among them) as the regional ELB account.
                    "Sid": "ElbAccountLogDelivery",
                    "Effect": "Allow",
                    "Principal": {"AWS": elb_account},
                    "Action": "s3:PutObject",
                    "Resource": prefix,
                },
            ]

        return secure_bucket(
            self,
            "access-logs",
            bucket_name(self, "access-logs", args.account_id),
            SecureBucketArgs(
                noncurrent_version_days=args.noncurrent_version_days,
                expire_current_after_days=args.settings.access_log_retention_days,
                extra_statements=log_delivery,
            ),
        )
