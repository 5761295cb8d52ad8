"""The Redis AUTH token reaches its clients: a KMS-encrypted Secrets Manager secret that only the app fleet's
role and the API/worker pods' IRSA role may read, fetched by the fleet's user data at boot."""

from __future__ import annotations

import re
import subprocess

from infra_helpers import as_list, inputs, plain_strings, policy, rid, secret_values, statements, user_data

from infra import app_fleet
from pynomaly_cli.offline import SECRET
from pynomaly_ops import outputs as keys


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


def test_user_data_fetches_the_token_into_a_root_only_file_for_the_units(r, stack, cfg):
    script = user_data(r, stack)
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)  # the boot script parses
    path = app_fleet.REDIS_PASSWORD_PATH
    fetch = re.search(r"\(umask 077 && .*?aws secretsmanager get-secret-value(.*?)\)\n", script, re.S)
    assert fetch, script
    args = fetch.group(1).split()
    assert args[args.index("--secret-id") + 1] == _secret_arn(r, stack)
    assert args[args.index("--region") + 1] == cfg.region
    assert args[-2:] == [">", path] and "--output" in args and "text" in args
    assert f"chmod 0400 {path}" in script and "install -d -m 0700 /etc/pynomaly" in script
    # The token itself is never in the launch template.
    assert _token(r, stack) not in script
    for unit in app_fleet.SERVICE_UNITS:
        drop_in = re.search(
            rf"cat > /etc/systemd/system/{unit}\.d/[\w.-]+\.conf <<'DROPIN'\n(.*?)DROPIN\n", script, re.S
        )
        assert drop_in, unit
        assert f"LoadCredential={app_fleet.REDIS_CREDENTIAL}:{path}" in drop_in.group(1)
        assert f"Environment=PYNOMALY_REDIS_PASSWORD_FILE=%d/{app_fleet.REDIS_CREDENTIAL}" in drop_in.group(1)
    # Fetched before anything else starts, and before the units restart with it.
    assert script.index("get-secret-value") < script.index("systemctl daemon-reload") < script.index("restart")
