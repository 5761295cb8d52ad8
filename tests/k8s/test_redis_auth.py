"""The Redis AUTH token in the pods: the API/worker IRSA role reads exactly its secret, the credentials sidecar
keeps a file of it in the memory volume, the service containers point PYNOMALY_REDIS_PASSWORD_FILE at it."""

from __future__ import annotations

import json
import stat

import boto3
import pytest
from moto import mock_aws

from infra import pod_specs
from infra.pod_scripts import db_credentials

REGION = "us-east-1"
SERVICE_DEPLOYMENTS = ("pynomaly-blue", "pynomaly-green", "pynomaly-worker")


def redis_secret_arn(stack) -> str:
    return stack.rendering.named(f"{stack.rendering.stack}-cache-auth-secret").state["arn"]


def irsa_policy(stack, account: str) -> dict:
    name = f"{stack.rendering.stack}-workload-{account}-irsa-access"
    return json.loads(stack.rendering.named(name).plain_inputs["policy"])


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def pod_spec(stack, deployment: str) -> dict:
    return stack.get("Deployment", deployment)["spec"]["template"]["spec"]


def test_api_role_reads_exactly_the_redis_secret_and_the_backup_role_not(each_stack):
    arn = redis_secret_arn(each_stack)
    doc = irsa_policy(each_stack, "pynomaly")
    (grant,) = [s for s in doc["Statement"] if arn in s["Resource"]]
    assert grant == {"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"], "Resource": [arn]}
    cache_key = each_stack.rendering.named(f"{each_stack.rendering.stack}-keys-cache").state["arn"]
    assert {"Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": [cache_key]} in doc["Statement"]
    backup = json.dumps(irsa_policy(each_stack, "pynomaly-backup"))
    assert arn not in backup and cache_key not in backup


@pytest.mark.parametrize("deployment", SERVICE_DEPLOYMENTS)
def test_sidecar_writes_the_password_file_the_service_reads(each_stack, deployment):
    spec = pod_spec(each_stack, deployment)
    (sidecar,) = [c for c in spec["initContainers"] if c["name"] == "db-credentials"]
    assert env_of(sidecar)["REDIS_AUTH_SECRET_ARN"] == redis_secret_arn(each_stack)
    assert env_of(sidecar)["PYNOMALY_REDIS_PASSWORD_FILE"] == pod_specs.REDIS_PASSWORD_FILE
    assert "--refresh-s" in sidecar["command"]
    # The main containers start only once both files are there.
    probe = sidecar["startupProbe"]["exec"]["command"]
    assert probe == ["test", "-s", pod_specs.PG_SERVICE_FILE, "-a", "-s", pod_specs.REDIS_PASSWORD_FILE]
    (volume,) = [v for v in spec["volumes"] if v["name"] == "db-credentials"]
    assert volume["emptyDir"]["medium"] == "Memory"
    assert pod_specs.REDIS_PASSWORD_FILE.startswith(pod_specs.DB_DIR + "/")
    for main in spec["containers"]:
        assert env_of(main)["PYNOMALY_REDIS_PASSWORD_FILE"] == pod_specs.REDIS_PASSWORD_FILE
        mount = {m["name"]: m for m in main["volumeMounts"]}["db-credentials"]
        assert mount["mountPath"] == pod_specs.DB_DIR and mount["readOnly"] is True


def test_backup_job_gets_no_redis_token(each_stack):
    cronjob = each_stack.get("CronJob", "pynomaly-db-backup")
    spec = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    for container in [*spec["initContainers"], *spec["containers"]]:
        assert "REDIS_AUTH_SECRET_ARN" not in env_of(container), container["name"]


def test_redis_url_uses_tls_and_carries_no_password(each_stack):
    url = each_stack.get("ConfigMap", "pynomaly-config")["data"]["PYNOMALY_REDIS_URL"]
    assert url.startswith("rediss://") and "@" not in url


def test_no_manifest_holds_the_token(each_stack):
    token = each_stack.rendering.named(f"{each_stack.rendering.stack}-cache-auth-token").state["result"]
    assert token and token not in json.dumps(each_stack.objects)


@pytest.fixture
def secrets_manager(monkeypatch):
    for key, value in {"AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        yield boto3.client("secretsmanager")


def test_script_writes_and_refreshes_both_files(secrets_manager, tmp_path):
    sm = secrets_manager
    db = sm.create_secret(Name="db", SecretString=json.dumps({"username": "u", "password": "p"}))["ARN"]
    redis = sm.create_secret(Name="redis", SecretString="tok!en&1")["ARN"]
    pg, token = tmp_path / "pg_service.conf", tmp_path / "redis-password"
    db_credentials.main(["--secret-arn", db, "--out", str(pg), "--redis-secret-arn", redis, "--redis-out", str(token)])
    assert token.read_text() == "tok!en&1\n"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and pg.exists()
    sm.put_secret_value(SecretId=redis, SecretString="rotated")
    db_credentials.refresh_redis(redis, token)
    assert token.read_text() == "rotated\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pg_service.conf", "redis-password"]  # no temp file


@pytest.mark.parametrize("value", ["  ", "two\nlines"])
def test_script_refuses_an_unusable_token(secrets_manager, tmp_path, value):
    arn = secrets_manager.create_secret(Name="redis", SecretString=value)["ARN"]
    with pytest.raises(SystemExit, match="Redis AUTH secret must be one non-empty line"):
        db_credentials.refresh_redis(arn, tmp_path / "redis-password")
    assert not (tmp_path / "redis-password").exists()
