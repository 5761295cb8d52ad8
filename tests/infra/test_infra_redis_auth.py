"""The Redis AUTH token reaches its clients: a KMS-encrypted Secrets Manager secret that only the app fleet's
role and the API/worker pods' IRSA role may read, refreshed into a file on the instances and in the pods."""

from __future__ import annotations

import subprocess

from infra_helpers import (
    as_list,
    env_file,
    inputs,
    parse_env,
    plain_strings,
    policy,
    rid,
    secret_values,
    statements,
    user_data,
)

from infra import pod_specs
from pynomaly_cli.offline import SECRET
from pynomaly_ops import outputs as keys
from service.config import ENV_NAMES


def _secret_arn(r, stack) -> str:
    return r.named(f"{stack}-cache-auth-secret").state["arn"]


def _token(r, stack) -> str:
    return r.named(f"{stack}-cache-auth-token").state["result"]


def test_token_is_in_a_secret_encrypted_with_the_cache_key(r, stack):
    secret = inputs(r, f"{stack}-cache-auth-secret")
    assert secret["name"] == f"{stack}-cache-auth-secret"
    assert secret["kmsKeyId"] == r.named(f"{stack}-keys-cache").state["arn"]
    version = r.named(f"{stack}-cache-auth-secret-value").inputs  # secret markers kept
    assert version["secretId"] == rid(f"{stack}-cache-auth-secret")
    assert version["secretString"] == {SECRET: _token(r, stack)}


def test_token_value_is_only_in_secret_marked_inputs_of_the_group_and_the_version(r, stack):
    token = _token(r, stack)
    holders = {x.name for x in r.resources if token in secret_values(x.inputs)}
    assert holders == {f"{stack}-cache-redis", f"{stack}-cache-auth-secret-value"}
    assert not [x.name for x in r.resources for text in plain_strings(x.inputs) if token in text]
    assert not [text for text in plain_strings(r.outputs) if token in text]


def test_secret_arn_is_a_stack_output(r, stack):
    assert r.outputs[keys.REDIS_AUTH_SECRET_ARN] == _secret_arn(r, stack)
    assert keys.StackOutputs.model_validate(r.outputs).redis_auth_secret_arn == _secret_arn(r, stack)


def test_fleet_role_reads_exactly_that_secret_and_its_key(r, stack):
    doc = policy(inputs(r, f"{stack}-fleet-role-policy"))
    readers = [s for s in statements(doc) if "secretsmanager:GetSecretValue" in as_list(s["Action"])]
    grants = {arn for s in readers for arn in as_list(s["Resource"])}
    assert _secret_arn(r, stack) in grants
    (redis,) = [s for s in readers if _secret_arn(r, stack) in as_list(s["Resource"])]
    assert as_list(redis["Resource"]) == [_secret_arn(r, stack)]
    assert as_list(redis["Action"]) == ["secretsmanager:GetSecretValue"]
    (data_keys,) = [s for s in statements(doc) if "kms:Decrypt" in as_list(s["Action"])]
    assert r.named(f"{stack}-keys-cache").state["arn"] in as_list(data_keys["Resource"])


def test_the_instances_take_the_token_from_the_refreshing_credentials_unit_not_the_boot(r, stack, tmp_path):
    # At boot only (the user data fetching it into a file handed to the units) a rotated token would need every
    # instance restarted; pynomaly-db-credentials refreshes it with the DB password, as the pods' sidecar does.
    script = user_data(r, stack)
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)  # the boot script parses
    assert "get-secret-value" not in script and "LoadCredential" not in script
    assert _token(r, stack) not in script  # the token itself is never in the launch template
    env = parse_env(env_file(script), tmp_path)
    assert env[pod_specs.REDIS_SECRET_ENV] == _secret_arn(r, stack)
    assert env[ENV_NAMES["redis_password_file"]] == pod_specs.REDIS_PASSWORD_FILE
