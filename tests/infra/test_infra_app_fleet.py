"""App fleet tier: launch template, ASG sizes from the numbers file, scaling, least privilege."""

from __future__ import annotations

import json
import re

from infra_helpers import as_list, heredoc, inputs, policy, rid, statements, user_data

from pynomaly_cli.offline import ACCOUNT


def test_launch_template_requires_imdsv2_with_hop_limit_one(r, stack, cfg):
    lt = inputs(r, f"{stack}-fleet-lt")
    assert lt["imageId"] == cfg.fleet.ami_id and lt["instanceType"] == cfg.fleet.instance_type
    meta = lt["metadataOptions"]
    assert meta["httpTokens"] == "required"
    assert meta["httpPutResponseHopLimit"] == 1
    assert meta["httpEndpoint"] == "enabled"


def test_root_volume_is_encrypted_gp3(r, stack, cfg):
    (mapping,) = inputs(r, f"{stack}-fleet-lt")["blockDeviceMappings"]
    ebs = mapping["ebs"]
    assert ebs["encrypted"] == "true" and ebs["volumeType"] == "gp3"
    assert ebs["volumeSize"] == cfg.fleet.root_volume_gb


def test_launch_template_uses_the_instance_profile_and_app_group(r, stack):
    lt = inputs(r, f"{stack}-fleet-lt")
    assert lt["iamInstanceProfile"]["arn"] == r.named(f"{stack}-fleet-profile").state["arn"]
    assert lt["vpcSecurityGroupIds"] == [rid(f"{stack}-network-app-sg")]
    assert inputs(r, f"{stack}-fleet-profile")["role"] == f"{stack}-fleet-role"


def test_user_data_installs_the_cloudwatch_agent_for_memory_disk_and_app_metrics(r, stack, cfg):
    script = user_data(r, stack)
    assert "dnf install -y amazon-cloudwatch-agent" in script
    assert "amazon-cloudwatch-agent-ctl -a fetch-config" in script
    agent = json.loads(heredoc(script, "AGENT"))
    collected = agent["metrics"]["metrics_collected"]
    assert collected["mem"]["measurement"] == ["mem_used_percent"]
    assert collected["disk"]["measurement"] == ["used_percent"]
    assert agent["metrics"]["aggregation_dimensions"] == [["AutoScalingGroupName"]]
    prom = agent["logs"]["metrics_collected"]["prometheus"]
    assert prom["emf_processor"]["metric_namespace"] == "Pynomaly/App"
    # The agent scrapes the local proxy, which reads the app's /metrics on the app port.
    scrape = json.loads(heredoc(script, "PROMETHEUS"))["scrape_configs"][0]
    assert scrape["metrics_path"] == "/metrics"
    (target,) = scrape["static_configs"][0]["targets"]
    proxy = re.search(r"ExecStart=/usr/bin/python3 (\S+) (\S+) (\d+)", script)
    assert proxy.group(2) == f"http://127.0.0.1:{cfg.fleet.app_port}/metrics"
    assert target == f"127.0.0.1:{proxy.group(3)}"
    assert f"cat > {proxy.group(1)} <<'PROXY'" in script
    assert "systemctl enable --now pynomaly-metrics-proxy.service" in script


def test_asg_sizes_come_from_the_numbers_file(r, stack, numbers):
    asg = inputs(r, f"{stack}-fleet-asg")
    assert asg["minSize"] == asg["desiredCapacity"] == numbers.scaling.instances_normal
    assert asg["maxSize"] == numbers.scaling.instances_high_load


def test_pulumi_up_keeps_the_capacity_scaling_set(r, stack):
    """Target tracking and the 000 high-load step (set-desired-capacity 6) move the desired capacity; a later
    `pulumi up` (e.g. the 002 maintenance switch) must not shrink the group back to its starting size."""
    assert "desiredCapacity" in r.named(f"{stack}-fleet-asg").ignore_changes


def test_asg_spans_the_app_subnets_behind_the_alb_with_elb_health_checks(r, stack, cfg):
    asg = inputs(r, f"{stack}-fleet-asg")
    assert asg["vpcZoneIdentifiers"] == [rid(f"{stack}-network-app-{i}") for i in range(3)]
    assert asg["targetGroupArns"] == [r.named(f"{stack}-lb-app").state["arn"]]
    assert asg["healthCheckType"] == "ELB"
    assert asg["healthCheckGracePeriod"] == cfg.fleet.health_check_grace_s > 0
    assert asg["launchTemplate"]["id"] == rid(f"{stack}-fleet-lt")
    assert asg["launchTemplate"]["version"] not in ("$Latest", "$Default")  # auto-rollback needs a fixed one


def test_a_release_reaches_the_group_only_through_a_refresh_that_can_roll_back(r, stack, cfg):
    # The provider's instance_refresh moves the group's template first and refreshes after
    # (terraform-provider-aws#34189): its rollback would go back to the new template. Pulumi never moves it here.
    asg = r.named(f"{stack}-fleet-asg")
    assert "instanceRefresh" not in asg.plain_inputs
    assert "launchTemplate" in asg.ignore_changes
    refresh = r.named(f"{stack}-fleet-refresh")
    assert refresh.type == "pulumi-python:dynamic:Resource"
    props = refresh.plain_inputs
    assert props["group"] == asg.plain_inputs["name"] and props["template_id"] == rid(f"{stack}-fleet-lt")
    assert props["version"] == str(r.named(f"{stack}-fleet-lt").state["latestVersion"])
    assert props["warmup_s"] == cfg.fleet.health_check_grace_s and props["region"] == cfg.region
    assert asg.urn in refresh.dependencies


def test_target_tracking_on_cpu_from_the_numbers_file(r, stack, numbers):
    policy_inputs = inputs(r, f"{stack}-fleet-cpu-target")
    assert policy_inputs["policyType"] == "TargetTrackingScaling"
    assert policy_inputs["autoscalingGroupName"] == f"{stack}-fleet-asg"
    tracking = policy_inputs["targetTrackingConfiguration"]
    assert tracking["predefinedMetricSpecification"]["predefinedMetricType"] == "ASGAverageCPUUtilization"
    assert tracking["targetValue"] == numbers.scaling.target_cpu_percent


def _stack_arns(r, stack, region) -> set[str]:
    """Every ARN the app may touch: exactly this stack's queue, buckets, secret, keys and log groups."""
    arn = lambda name: r.named(name).state["arn"]  # noqa: E731
    buckets = [arn(f"{stack}-storage-artifacts")]  # not the backups bucket: database dumps are not the app's
    logs = [arn(f"{stack}-fleet-{g}-logs") for g in ("app", "prometheus")]
    primary = r.named(f"{stack}-database-primary").state
    return {
        arn(f"{stack}-queue-jobs"),
        *buckets,
        *(f"{b}/*" for b in buckets),
        primary["masterUserSecrets"][0]["secretArn"],
        f"arn:aws:rds-db:{region}:{ACCOUNT}:dbuser:{primary['resourceId']}/pynomaly",
        arn(f"{stack}-cache-auth-secret"),  # the Redis AUTH token, read at boot
        *(arn(f"{stack}-keys-{k}") for k in ("queue", "storage", "database", "cache")),
        *logs,
        *(f"{g}:*" for g in logs),
    }


def test_instance_role_names_exactly_this_stacks_resources(r, stack, cfg):
    doc = policy(inputs(r, f"{stack}-fleet-role-policy"))
    named = set()
    for statement in statements(doc):
        assert statement["Effect"] == "Allow"
        assert all(not a.endswith(":*") and a != "*" for a in as_list(statement["Action"]))
        resources = as_list(statement["Resource"])
        if resources == ["*"]:
            # Only actions without resource-level permissions, and metrics confined by namespace.
            assert statement["Action"] in (["cloudwatch:PutMetricData"], ["ec2:DescribeTags"])
            if statement["Action"] == ["cloudwatch:PutMetricData"]:
                assert statement["Condition"]["StringEquals"]["cloudwatch:namespace"] == ["CWAgent", "Pynomaly/App"]
            continue
        named.update(resources)
    assert named == _stack_arns(r, stack, cfg.region)
    assert all(stack in arn for arn in named if ":kms:" not in arn)


def test_instance_role_is_assumable_by_ec2_only(r, stack):
    trust = policy(inputs(r, f"{stack}-fleet-role"), "assumeRolePolicy")
    assert [s["Principal"] for s in statements(trust)] == [{"Service": "ec2.amazonaws.com"}]
    attachments = [
        a.plain_inputs["policyArn"]
        for a in r.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if a.plain_inputs["role"] == f"{stack}-fleet-role"
    ]
    assert attachments == ["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"]
