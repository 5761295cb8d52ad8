"""Load balancer tier: listeners, TLS, redirect, headers, logs, protection, WAF, maintenance."""

from __future__ import annotations

import math
from fnmatch import fnmatchcase

import pytest
from infra_helpers import ONCALL, as_list, inputs, one, policy, rid, statements

from infra.load_balancer import API_KEY_HEADER, WAF_WINDOWS_S, WafLimits
from pynomaly_ops.baselines import Baselines

WEB_ACL = "aws:wafv2/webAcl:WebAcl"


def test_alb_is_public_drops_invalid_headers_and_logs(r, stack, cfg):
    alb = inputs(r, f"{stack}-lb-alb")
    assert alb["internal"] is False and alb["loadBalancerType"] == "application"
    assert alb["subnets"] == [rid(f"{stack}-network-public-{i}") for i in range(3)]
    assert alb["securityGroups"] == [rid(f"{stack}-network-alb-sg")]
    assert alb["dropInvalidHeaderFields"] is True
    logs = alb["accessLogs"]
    assert logs["enabled"] is True
    assert logs["bucket"] == r.named(f"{stack}-lb-access-logs").state["bucket"]


def test_deletion_protection_follows_settings_and_is_on_in_prod(r, stack, cfg):
    protected = inputs(r, f"{stack}-lb-alb")["enableDeletionProtection"]
    assert protected is cfg.lb.deletion_protection
    if stack == "prod":
        assert protected is True


def test_https_listener_uses_the_certificate_and_a_tls12_policy(r, stack, cfg):
    https = inputs(r, f"{stack}-lb-https")
    assert https["port"] == 443 and https["protocol"] == "HTTPS"
    assert https["certificateArn"] == cfg.lb.certificate_arn
    assert https["sslPolicy"] == cfg.lb.ssl_policy
    assert https["sslPolicy"].startswith(("ELBSecurityPolicy-TLS13-1-2", "ELBSecurityPolicy-TLS-1-2"))
    (action,) = https["defaultActions"]
    assert action == {"type": "forward", "targetGroupArn": r.named(f"{stack}-lb-app").state["arn"]}


def test_internal_pages_answer_404_at_the_https_listener(r, stack):
    rule = inputs(r, f"{stack}-lb-internal-pages")
    assert rule["listenerArn"] == r.named(f"{stack}-lb-https").state["arn"]
    assert rule["priority"] == 1  # before anything else the listener would do
    (condition,) = rule["conditions"]
    patterns = condition["pathPattern"]["values"]
    assert set(patterns) == {"/metrics", "/ready", "/openapi.json", "/docs*", "/redoc*"}
    # ALB quotas: at most 5 condition values per rule, and 5 wildcards
    assert len(patterns) <= 5 and sum(p.count("*") + p.count("?") for p in patterns) <= 5
    (action,) = rule["actions"]
    assert action["type"] == "fixed-response" and action["fixedResponse"]["statusCode"] == "404"
    # the public API and the health check are not among them (ALB patterns: * any characters, ? one)
    public = ("/api/v1/detect", "/api/v1/jobs", "/health")
    assert [path for path in public if any(fnmatchcase(path, p) for p in patterns)] == []


def test_http_listener_only_redirects_to_https(r, stack):
    http = inputs(r, f"{stack}-lb-http")
    assert http["port"] == 80 and http["protocol"] == "HTTP"
    (action,) = http["defaultActions"]
    assert action["type"] == "redirect"
    assert action["redirect"] == {"protocol": "HTTPS", "port": "443", "statusCode": "HTTP_301"}


def test_target_group_checks_health_on_the_app_port(r, stack, cfg):
    tg = inputs(r, f"{stack}-lb-app")
    assert tg["port"] == cfg.fleet.app_port and tg["protocol"] == "HTTP"
    assert tg["healthCheck"]["path"] == "/health"
    assert tg["healthCheck"]["matcher"] == "200"


def test_access_log_bucket_lets_elb_log_delivery_write(r, stack):
    bucket = r.named(f"{stack}-lb-access-logs").state["arn"]
    doc = policy(inputs(r, f"{stack}-lb-access-logs-policy"))
    writers = [s for s in statements(doc) if s["Effect"] == "Allow" and s["Action"] == "s3:PutObject"]
    principals = [p for s in writers for p in as_list(s["Principal"].get("Service", []))]
    assert "logdelivery.elasticloadbalancing.amazonaws.com" in principals
    assert all(s["Resource"].startswith(f"{bucket}/alb/AWSLogs/") for s in writers)
    sse = inputs(r, f"{stack}-lb-access-logs-encryption")["rules"][0]["applyServerSideEncryptionByDefault"]
    assert sse["sseAlgorithm"] == "AES256"  # ALB log delivery cannot write SSE-KMS


def test_waf_has_managed_rule_groups_and_a_rate_limit(r, stack, cfg):
    acl = inputs(r, f"{stack}-lb-waf")
    assert acl["scope"] == "REGIONAL"
    assert "allow" in acl["defaultAction"]
    rules = {rule["name"]: rule for rule in acl["rules"]}
    rate = {name: rule for name, rule in rules.items() if "rateBasedStatement" in rule["statement"]}
    assert set(rate) == {"rate-limit-per-ip", "rate-limit-per-api-key"}
    per_ip = rate["rate-limit-per-ip"]["statement"]["rateBasedStatement"]
    own = {"ipSetReferenceStatement": {"arn": r.named(f"{stack}-network-nat-addresses").state["arn"]}}
    assert per_ip == {
        "limit": cfg.lb.waf_rate_limit,
        "aggregateKeyType": "IP",
        "scopeDownStatement": {"notStatement": {"statement": own}},  # all but the VPC's own addresses
    }
    assert all("block" in rule["action"] for rule in rate.values())
    managed = {
        rule["statement"]["managedRuleGroupStatement"]["name"]
        for rule in rules.values()
        if "managedRuleGroupStatement" in rule["statement"]
    }
    assert {"AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet"} <= managed
    assert all("overrideAction" in rule for rule in rules.values() if "managedRuleGroupStatement" in rule["statement"])
    assert len({rule["priority"] for rule in rules.values()}) == len(rules)
    association = one(r, "aws:wafv2/webAclAssociation:WebAclAssociation").plain_inputs
    assert association["resourceArn"] == r.named(f"{stack}-lb-alb").state["arn"]
    assert association["webAclArn"] == r.named(f"{stack}-lb-waf").state["arn"]


def test_the_vpcs_own_addresses_are_its_nat_gateways(r, stack):
    """Locust's workers on EKS reach the ALBs through the NAT gateways: at a load test's rate from one to three
    addresses, which the per-address limit leaves out (the per-key limit still counts them)."""
    eips = [x for x in r.of_type("aws:ec2/eip:Eip")]
    nat_set = inputs(r, f"{stack}-network-nat-addresses")
    assert nat_set["scope"] == "REGIONAL" and nat_set["ipAddressVersion"] == "IPV4"
    assert sorted(nat_set["addresses"]) == sorted(f"{e.state['publicIp']}/32" for e in eips) and eips


def _per_key(acl_inputs: dict) -> dict:
    (rule,) = [x for x in acl_inputs["rules"] if x["name"] == "rate-limit-per-api-key"]
    return rule["statement"]["rateBasedStatement"]


def _expected_per_key(numbers: Baselines, stack: str) -> tuple[int, int]:
    """(limit, window): the local load balancer's per-key rate (baselines.yaml abuse, local/render.py) for this
    stack, counted over the shortest WAF window that holds the numbers file's window."""
    window = min(w for w in WAF_WINDOWS_S if w >= numbers.abuse.rate_window_s)
    return math.ceil(numbers.request_limit_per_s(stack) * window), window


def test_waf_limits_each_api_key_as_the_numbers_file_says(r, stack, numbers):
    """Issue 22: the per-key limit the local HAProxy enforces, on the Authorization header, from the same entry."""
    statement = _per_key(inputs(r, f"{stack}-lb-waf"))
    limit, window = _expected_per_key(numbers, stack)
    assert statement["limit"] == limit and statement["evaluationWindowSec"] == window
    assert statement["aggregateKeyType"] == "CUSTOM_KEYS"
    (key,) = statement["customKeys"]
    assert key["header"]["name"] == API_KEY_HEADER == "Authorization"
    # Counted as sent: a key is case-sensitive, so no transformation may merge two keys.
    assert key["header"]["textTransformations"] == [{"priority": 0, "type": "NONE"}]
    # No load test meets it: the peak of the stack's load tests, with the numbers file's headroom.
    peak = numbers.traffic.peak_multiplier * numbers.load.normal_rate(stack)
    assert limit / window >= numbers.abuse.rate_headroom * peak


def test_changing_the_abuse_numbers_changes_the_per_key_limit(changed, numbers):
    changed_numbers, r = changed
    limit = _per_key(inputs(r, "dev-lb-waf"))["limit"]
    assert limit == _expected_per_key(changed_numbers, "dev")[0] != _expected_per_key(numbers, "dev")[0]


@pytest.mark.parametrize(("window_s", "waf_window_s"), [(10, 60), (60, 60), (61, 120), (600, 600)])
def test_the_per_key_window_is_the_shortest_waf_window_holding_the_numbers_files(numbers, window_s, waf_window_s):
    abuse = numbers.abuse.model_copy(update={"rate_window_s": window_s})
    assert WafLimits.of(100, numbers.model_copy(update={"abuse": abuse}), "prod", "arn").key_window_s == waf_window_s


@pytest.mark.parametrize(
    ("abuse", "says"), [({"rate_window_s": 601}, "WAF counts over"), ({"rate_headroom": 1e-3}, "outside WAF's 10")]
)
def test_a_per_key_limit_waf_cannot_enforce_is_refused(numbers, abuse, says):
    # 1e-3 x the local peak over 60 s is under WAF's minimum of 10 (the model skips validation on copy).
    changed = numbers.model_copy(update={"abuse": numbers.abuse.model_copy(update=abuse)})
    with pytest.raises(ValueError, match=says):
        WafLimits.of(100, changed, "local", "arn")


def test_maintenance_mode_answers_a_fixed_503_page(dev_variant):
    (action,) = inputs(dev_variant, "dev-lb-https")["defaultActions"]
    assert action["type"] == "fixed-response"
    assert action["fixedResponse"]["statusCode"] == "503"
    assert action["fixedResponse"]["contentType"] == "text/html"
    assert "maintenance" in action["fixedResponse"]["messageBody"]
    # The fleet stays registered, ready for the switch back.
    assert inputs(dev_variant, "dev-fleet-asg")["targetGroupArns"]


def test_alarm_emails_subscribe_to_both_topics(dev_variant):
    subs = dev_variant.of_type("aws:sns/topicSubscription:TopicSubscription")
    by_topic = {}
    for sub in subs:
        i = sub.plain_inputs
        assert i["protocol"] == "email"
        by_topic.setdefault(i["topic"], set()).add(i["endpoint"])
    topics = {dev_variant.named(f"dev-alarms-{sev}").state["arn"] for sev in ("warning", "critical")}
    assert set(by_topic) == topics
    assert all(emails == set(ONCALL) for emails in by_topic.values())


def test_waf_lets_detect_bodies_over_8kb_through(r):
    """The common rule set blocks bodies over 8 KB; a /detect series is far larger, so that rule only counts (in
    every web ACL: the EKS Ingress's too)."""
    acls = r.of_type(WEB_ACL)
    assert acls
    for acl in acls:
        (common,) = [
            rule["statement"]["managedRuleGroupStatement"]
            for rule in acl.plain_inputs["rules"]
            if rule["statement"].get("managedRuleGroupStatement", {}).get("name") == "AWSManagedRulesCommonRuleSet"
        ]
        overrides = {o["name"]: o["actionToUse"] for o in common.get("ruleActionOverrides") or []}
        assert overrides.get("SizeRestrictions_BODY") == {"count": {}}, acl.name
