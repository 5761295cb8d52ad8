"""The pack over the program's renderings: every stack file passes, and a deliberately unsafe configuration or
program change yields exactly the violations it should (a program change is its rendering, edited)."""

from __future__ import annotations

import importlib
import inspect

import pytest
import yaml
from policy_helpers import PUBLIC_ENDPOINT, STACKS, changed, mandatory, without

from policy.pack import POLICIES
from policy.tagging import TAGGABLE
from pynomaly_cli.policy_check import check
from pynomaly_ops import baselines
from pynomaly_ops.alarms import Target, catalogue, for_target


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_file_meets_every_rule(renderings, stack):
    outcome = check(renderings[stack])
    assert [v.message for v in outcome.violations] == []
    assert outcome.not_run == []  # the mocks know every value


def test_a_public_database(prod):
    r = changed(prod, "prod-database-primary", publiclyAccessible=True)
    assert mandatory(r) == [("rds-not-public", "prod-database-primary")]


def test_no_multi_az_in_prod_and_only_in_prod(renderings, prod):
    """The settings refuse db.multi_az false in prod before any resource is declared; a program change that
    drops it is the pack's to catch. In staging the same change is allowed."""
    assert mandatory(changed(prod, "prod-database-primary", multiAz=False)) == [
        ("prod-rds-multi-az", "prod-database-primary")
    ]
    assert mandatory(changed(renderings["staging"], "staging-database-primary", multiAz=False)) == []


def test_a_missing_alarm(prod):
    assert mandatory(without(prod, "prod-alarms-cpu-critical")) == [("alarm-catalogue", "prod-alarms-cpu-critical")]


def test_an_unencrypted_bucket(prod):
    assert mandatory(without(prod, "prod-storage-artifacts-encryption")) == [("s3-sse-kms", "prod-storage-artifacts")]
    sse_s3 = [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}]
    r = changed(prod, "prod-storage-backups-encryption", rules=sse_s3)
    assert mandatory(r) == [("s3-sse-kms", "prod-storage-backups")]


def test_the_alb_log_bucket_keeps_sse_s3(prod):
    algorithms = prod.named("prod-lb-access-logs-encryption").plain_inputs["rules"]
    assert algorithms[0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"  # and passes (above)


def test_an_alarm_threshold_in_the_wrong_unit(prod):
    """The p95 alarm is in seconds (TargetResponseTime); the file's 500 ms typed as 500 is caught."""
    name = "prod-alarms-response-time-p95-warning"
    r = changed(prod, name, threshold=500.0)
    assert mandatory(r) == [("alarm-catalogue", name)]
    (message,) = [v.message for v in check(r).violations]
    assert "threshold 500.0 is not the catalogue's 500 (0.5 in the metric's unit)" in message


def test_an_alarm_that_notifies_nobody(prod):
    name = "prod-alarms-cpu-warning"
    assert mandatory(changed(prod, name, alarmActions=[])) == [("alarm-actions", name), ("alarm-catalogue", name)]


def test_a_numbers_file_changed_after_the_rendering(prod):
    """The thresholds and the instance count come from baselines.yaml: the pack reads the file, so a deployed
    stack that no longer matches it (changed numbers, no `pulumi up`) fails on exactly what changed."""
    data = yaml.safe_load(baselines.DEFAULT_PATH.read_text())
    data["thresholds"]["cpu_percent"] = {"warning": 70, "critical": 90}
    data["scaling"]["instances_normal"] = data["scaling"]["instances_high_load"]
    numbers = baselines.parse(data)
    moved = [
        a.name(Target.CLOUDWATCH, "prod")
        for a in for_target(catalogue(numbers), Target.CLOUDWATCH)
        if a.baseline.startswith(("thresholds.cpu_percent", "scaling.instances_normal"))
    ]
    assert len(moved) == 9  # fleet, database, replica and Redis CPU (warning and critical), healthy hosts
    expected = sorted([("alarm-catalogue", name) for name in moved] + [("prod-asg-capacity", "prod-fleet-asg")])
    assert mandatory(prod, numbers=numbers) == expected


def test_the_eks_public_endpoint_admits_the_configured_cidrs_only(renderings):
    r = renderings["dev-public-endpoint"]
    vpc = r.named("dev-cluster-eks").plain_inputs["vpcConfig"]
    assert vpc["endpointPublicAccess"] and vpc["publicAccessCidrs"] == ["203.0.113.7/32"]
    assert mandatory(r, PUBLIC_ENDPOINT) == []
    wider = changed(r, "dev-cluster-eks", vpcConfig={**vpc, "publicAccessCidrs": ["203.0.113.7/32", "0.0.0.0/0"]})
    assert mandatory(wider, PUBLIC_ENDPOINT) == [("eks-public-endpoint", "dev-cluster-eks")]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # importing a pulumi-aws module warns of its old classes
def test_the_taggable_types_are_those_pulumi_aws_tags(renderings):
    """Every AWS type the stacks declare is in TAGGABLE exactly when its pulumi-aws resource takes tags."""
    declared = {x.type for r in renderings.values() for x in r.resources if x.type.startswith("aws:")}
    for token in declared | TAGGABLE:
        _, module, name = token.split(":")
        resource = getattr(importlib.import_module(f"pulumi_aws.{module.split('/')[0]}"), name)
        takes_tags = "tags" in inspect.signature(resource._internal_init).parameters
        assert takes_tags == (token in TAGGABLE), token


def test_rule_names_are_unique():
    names = [p.name for p in POLICIES]
    assert len(names) == len(set(names))
