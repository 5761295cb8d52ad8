"""Load balancer tier: the internet-facing ALB, its TLS listeners, WAF and access logs.

HTTP only redirects to HTTPS; HTTPS uses a TLS 1.2+ policy. The maintenance
switch (``lb.maintenance_mode``, 002 "Redirect traffic to maintenance page")
turns the HTTPS default action into a fixed 503 page; flipping it back
restores forwarding, with the fleet untouched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.storage import SecureBucketArgs, bucket_name, secure_bucket
from infra.tier import Tier
from pynomaly_ops import maintenance as maintenance_page
from pynomaly_ops.baselines import Baselines
from pynomaly_ops.environment import INTERNAL_PATHS, INTERNAL_PREFIXES
from pynomaly_ops.settings import LoadBalancer as LoadBalancerSettings

HEALTH_CHECK_PATH = "/health"
LOG_PREFIX = "alb"
# AWS managed rule groups, in evaluation order after the rate limits (003 WAF).
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
# The header the service reads the API key from (`Authorization: Bearer <key>`, service/auth.py).
API_KEY_HEADER = "Authorization"
# WAFV2 RateBasedStatement (API reference): EvaluationWindowSec is one of these; Limit is 10 to 2,000,000,000.
WAF_WINDOWS_S = (60, 120, 300, 600)
WAF_LIMIT_RANGE = (10, 2_000_000_000)


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
class WafLimits:
    """The web ACLs' rate limits: requests per client address in 5 minutes (``lb.waf_rate_limit``), and per API
    key in ``key_window_s`` (the numbers file's, as the local load balancer counts them)."""

    per_ip: int
    per_key: int
    key_window_s: int
    # A WAF IP set the per-address limit leaves out: the VPC's NAT addresses (infra/network.py), behind which the
    # cluster's pods, Locust's workers among them, all share one to three addresses.
    own_addresses_arn: pulumi.Input[str]

    @classmethod
    def of(cls, per_ip: int, numbers: Baselines, target: str, own_addresses_arn: pulumi.Input[str]) -> WafLimits:
        """``per_key``: ``request_limit_per_s(target)`` over the shortest WAF window holding ``abuse.rate_window_s``
        (HAProxy counts over that window itself; WAF offers a few fixed ones)."""
        window = next((w for w in WAF_WINDOWS_S if w >= numbers.abuse.rate_window_s), None)
        if window is None:
            raise ValueError(f"abuse.rate_window_s {numbers.abuse.rate_window_s:g}: WAF counts over {WAF_WINDOWS_S} s")
        per_key = math.ceil(numbers.request_limit_per_s(target) * window)
        low, high = WAF_LIMIT_RANGE
        if not low <= per_key <= high:
            raise ValueError(f"per-key rate limit {per_key} per {window} s is outside WAF's {low}..{high}")
        return cls(per_ip=per_ip, per_key=per_key, key_window_s=window, own_addresses_arn=own_addresses_arn)


@dataclass(frozen=True)
class LoadBalancerArgs:
    settings: LoadBalancerSettings
    vpc_id: pulumi.Input[str]
    security_group_id: pulumi.Input[str]
    public_subnet_ids: Sequence[pulumi.Input[str]]
    app_port: int
    account_id: pulumi.Input[str]
    noncurrent_version_days: int
    waf: WafLimits


def _visibility(metric: str) -> aws.wafv2.WebAclVisibilityConfigArgsDict:
    return {"cloudwatch_metrics_enabled": True, "metric_name": metric, "sampled_requests_enabled": True}


def _managed_group(group: str) -> aws.wafv2.WebAclRuleStatementManagedRuleGroupStatementArgsDict:
    statement: aws.wafv2.WebAclRuleStatementManagedRuleGroupStatementArgsDict = {"name": group, "vendor_name": "AWS"}
    if group in COUNTED_RULES:
        statement["rule_action_overrides"] = [
            {"name": rule, "action_to_use": {"count": {}}} for rule in COUNTED_RULES[group]
        ]
    return statement


def _rate_rule(
    name: str, priority: int, statement: aws.wafv2.WebAclRuleStatementRateBasedStatementArgsDict
) -> aws.wafv2.WebAclRuleArgsDict:
    return {
        "name": name,
        "priority": priority,
        "action": {"block": {}},
        "statement": {"rate_based_statement": statement},
        "visibility_config": _visibility(name),
    }


def _per_ip(limits: WafLimits) -> aws.wafv2.WebAclRuleStatementRateBasedStatementArgsDict:
    """Counted per client address, but for the VPC's own: a remote load test at prod's peak from one NAT address
    would pass any per-address limit meant for a client."""
    own: aws.wafv2.WebAclRuleStatementRateBasedStatementScopeDownStatementArgsDict = {
        "ip_set_reference_statement": {"arn": limits.own_addresses_arn}
    }
    return {
        "limit": limits.per_ip,
        "aggregate_key_type": "IP",
        "scope_down_statement": {"not_statement": {"statement": own}},
    }


def _per_key(limits: WafLimits) -> aws.wafv2.WebAclRuleStatementRateBasedStatementArgsDict:
    """Counted per value of the API key header, as the local HAProxy counts per key. A request without the header
    is not counted here (WAF leaves out requests missing an aggregation key), only per address; unlike HAProxy,
    other paths than /api/ count too, but a client sends its key to /api/ only. 32 WCUs (2, and 30 per custom key):
    with the managed groups' 1,125 and the per-address rule's 3 (2, and 1 for its IP set scope-down), within the
    1,500 a web ACL includes."""
    key: aws.wafv2.WebAclRuleStatementRateBasedStatementCustomKeyHeaderArgsDict = {
        "name": API_KEY_HEADER,
        "text_transformations": [{"priority": 0, "type": "NONE"}],  # a key is case-sensitive: counted as sent
    }
    return {
        "limit": limits.per_key,
        "evaluation_window_sec": limits.key_window_s,
        "aggregate_key_type": "CUSTOM_KEYS",
        "custom_keys": [{"header": key}],
    }


def waf_rules(limits: WafLimits) -> list[aws.wafv2.WebAclRuleArgsDict]:
    """The rate limits per client address and per API key, then the AWS managed rule groups."""
    rates = [
        _rate_rule("rate-limit-per-ip", 0, _per_ip(limits)),
        _rate_rule("rate-limit-per-api-key", 1, _per_key(limits)),
    ]
    managed: list[aws.wafv2.WebAclRuleArgsDict] = [
        {
            "name": group,
            "priority": i,
            "override_action": {"none": {}},
            "statement": {"managed_rule_group_statement": _managed_group(group)},
            "visibility_config": _visibility(group),
        }
        for i, group in enumerate(MANAGED_RULE_GROUPS, start=len(rates))
    ]
    return [*rates, *managed]


def web_acl(owner: Tier, role: str, limits: WafLimits) -> aws.wafv2.WebAcl:
    """A regional web ACL with :func:`waf_rules`, for one ALB: the EC2 fleet's, or the Ingress's (infra/workload.py)."""
    return aws.wafv2.WebAcl(
        owner.name_of(role),
        name=owner.name_of(role),
        scope="REGIONAL",
        default_action={"allow": {}},
        rules=waf_rules(limits),
        visibility_config=_visibility(owner.name_of(role)),
        tags=owner.tagged(role),
        opts=owner.child,
    )


class LoadBalancer(Tier):
    TIER = "lb"

    url: pulumi.Output[str]
    dns_name: pulumi.Output[str]
    arn_suffix: pulumi.Output[str]
    target_group_arn: pulumi.Output[str]
    https_listener_arn: pulumi.Output[str]
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
        acl = web_acl(self, "waf", args.waf)
        aws.wafv2.WebAclAssociation(
            self.name_of("waf-association"), resource_arn=alb.arn, web_acl_arn=acl.arn, opts=self.child
        )
        self.url = pulumi.Output.concat("https://", alb.dns_name)
        self.dns_name = alb.dns_name
        self.arn_suffix = alb.arn_suffix
        self.target_group_arn = target_group.arn
        self.https_listener_arn = https.arn  # maintenance mode switches its default action (aws_target/faults.py)
        self.target_group_arn_suffix = target_group.arn_suffix
        self.logs_bucket = logs_bucket.bucket
        self.register_outputs(
            {
                "url": self.url,
                "dns_name": self.dns_name,
                "arn_suffix": self.arn_suffix,
                "target_group_arn": self.target_group_arn,
                "https_listener_arn": self.https_listener_arn,
                "target_group_arn_suffix": self.target_group_arn_suffix,
                "logs_bucket": self.logs_bucket,
            }
        )

    @staticmethod
    def _default_action(maintenance: bool, target_group: aws.lb.TargetGroup) -> aws.lb.ListenerDefaultActionArgsDict:
        if maintenance:
            return {
                "type": "fixed-response",
                "fixed_response": {
                    "content_type": maintenance_page.CONTENT_TYPE,
                    "status_code": maintenance_page.STATUS_CODE,
                    "message_body": maintenance_page.PAGE,  # the page the AWS fault library switches to as well
                },
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
