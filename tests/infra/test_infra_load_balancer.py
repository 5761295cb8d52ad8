"""Load balancer tier: listeners, TLS, redirect, headers, logs, protection, WAF, maintenance."""

from __future__ import annotations

from fnmatch import fnmatchcase

from infra_helpers import ONCALL, as_list, inputs, one, policy, rid, statements


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
    acl = one(r, "aws:wafv2/webAcl:WebAcl").plain_inputs
    assert acl["scope"] == "REGIONAL"
    assert "allow" in acl["defaultAction"]
    rules = {rule["name"]: rule for rule in acl["rules"]}
    rate = [rule for rule in rules.values() if "rateBasedStatement" in rule["statement"]]
    assert len(rate) == 1
    assert rate[0]["statement"]["rateBasedStatement"]["limit"] == cfg.lb.waf_rate_limit
    assert "block" in rate[0]["action"]
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
    """The common rule set blocks bodies over 8 KB; a /detect series is far larger, so that rule only counts."""
    acl = one(r, "aws:wafv2/webAcl:WebAcl").plain_inputs
    (common,) = [
        rule["statement"]["managedRuleGroupStatement"]
        for rule in acl["rules"]
        if rule["statement"].get("managedRuleGroupStatement", {}).get("name") == "AWSManagedRulesCommonRuleSet"
    ]
    overrides = {o["name"]: o["actionToUse"] for o in common.get("ruleActionOverrides") or []}
    assert overrides.get("SizeRestrictions_BODY") == {"count": {}}
