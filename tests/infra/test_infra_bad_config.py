"""Bad configuration fails before any resource, with one message naming the file and key."""

from __future__ import annotations

import pytest
from infra_helpers import BAD_SETTINGS, NO_CLUSTER, PHASE_ONE, REQUIRED, rendered

from pynomaly_cli.offline import PLACEHOLDERS, OfflineError
from pynomaly_ops import baselines
from pynomaly_ops import settings as stack_settings


def _error(stack: str, overrides: dict | None = None, env: dict | None = None) -> str:
    with pytest.raises(OfflineError) as caught:
        rendered(stack, overrides, env)
    return str(caught.value)


@pytest.mark.parametrize(
    ("stack", "overrides", "key", "says"),
    BAD_SETTINGS,
    ids=[
        "unknown-key",
        "min-over-max",
        "prod-single-az",
        "prod-db-unprotected",
        "prod-lb-unprotected",
        "no-cert",
        "private-endpoint-unreachable",
    ],
)
def test_bad_setting_names_the_stack_file_and_key(stack, overrides, key, says):
    message = _error(stack, overrides)
    assert f"stacks/Pulumi.{stack}.yaml" in message
    assert key in message and says in message
    assert "Traceback" not in message


def test_same_switch_is_allowed_outside_prod(dev_variant):
    # The prod rule is about the stack, not the setting: dev may be single-AZ.
    assert dev_variant.named("dev-database-primary").plain_inputs["multiAz"] is False


def test_warning_at_or_above_critical_in_the_numbers_file_names_file_and_key(numbers_files):
    path = numbers_files["warning_equals_critical"]
    message = _error("dev", NO_CLUSTER, env={baselines.PATH_ENV: path})
    assert path in message
    assert "thresholds.cpu_percent" in message and "must be below critical" in message


@pytest.mark.parametrize("name", ["Prod", "prod_eu", "eu--prod", "production-us-east-1"])
def test_stack_name_that_cannot_start_aws_names_is_refused(name):
    # Every physical name starts with the stack name; the auto-named target group allows at most 32 characters.
    with pytest.raises(stack_settings.SettingsError) as caught:
        stack_settings.build(name, REQUIRED)
    assert f"stack name {name!r}" in str(caught.value) and "lowercase" in str(caught.value)


def test_the_longest_allowed_stack_name_fits_the_target_group_limit():
    name = "a" * stack_settings.STACK_NAME_MAX
    assert stack_settings.build(name, REQUIRED).stack == name
    assert len(f"{name}-lb-app-") + 7 <= 32


def test_phase_one_of_a_private_first_deploy_declares_the_cluster_and_nothing_in_it():
    r = rendered("prod", PHASE_ONE)
    (eks,) = r.of_type("aws:eks/cluster:Cluster")
    assert eks.plain_inputs["vpcConfig"]["endpointPublicAccess"] is False
    assert not [x.type for x in r.resources if x.type.startswith("kubernetes:")]
    assert "cluster_name" in r.outputs and "workload_namespace" not in r.outputs


def test_a_public_endpoint_for_the_runner_needs_no_statement_about_the_runner():
    cidrs = {"pynomaly:cluster.public_access_cidrs": ["203.0.113.7/32"], "pynomaly:cluster.runner_in_vpc": False}
    settings = stack_settings.from_stack_file("prod", {**PLACEHOLDERS, **cidrs})
    assert settings.cluster.declares_kubernetes
