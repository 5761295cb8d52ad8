"""The scripts the pods run (infra/pod_scripts), and the nightly backup CronJob's steps run for real.

The integration test takes the CronJob's three containers from the rendered prod manifest and runs their
commands on this machine, in order, against a real PostgreSQL 15 and moto (Secrets Manager + S3), then
restores the catalogue of the uploaded dump with pg_restore.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import boto3
import certifi
import psycopg
import pytest
from moto import mock_aws
from servers import PG_BIN, MotoServer, PostgresServer

from infra import pod_specs
from infra.pod_scripts import db_credentials, upload_backup
from infra.workload import BACKUP_DIR, SCRIPTS

REGION = "us-east-1"


@pytest.fixture
def aws(monkeypatch):
    for key, value in {"AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        yield


def test_service_file_from_the_secret(aws, tmp_path):
    sm = boto3.client("secretsmanager")
    arn = sm.create_secret(Name="db", SecretString=json.dumps({"username": "pynomaly", "password": "s3cr=t!"}))["ARN"]
    out = tmp_path / "db" / "pg_service.conf"
    db_credentials.main(["--secret-arn", arn, "--out", str(out), "--service", "pynomaly"])
    assert out.read_text() == "[pynomaly]\nuser=pynomaly\npassword=s3cr=t!\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    # A rotation reaches the file on the next refresh, replacing it whole.
    sm.put_secret_value(SecretId=arn, SecretString=json.dumps({"username": "pynomaly", "password": "rotated"}))
    db_credentials.refresh(arn, out, "pynomaly")
    assert out.read_text().endswith("password=rotated\n")
    assert [p.name for p in out.parent.iterdir()] == ["pg_service.conf"]  # no temp file left behind


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("not json", "must be JSON with username and password"),
        (json.dumps({"username": "u"}), "must be JSON with username and password"),
        (json.dumps({"username": "u", "password": "a\nb"}), "password contains a line break"),
    ],
)
def test_bad_secret_is_refused_with_the_reason(secret, message):
    with pytest.raises(SystemExit, match=message):
        db_credentials.service_file_text(secret, "pynomaly")


def test_no_secret_given_is_refused(monkeypatch):
    monkeypatch.delenv("DB_SECRET_ARN", raising=False)
    with pytest.raises(SystemExit, match="pass --secret-arn or set DB_SECRET_ARN"):
        db_credentials.main([])


def test_upload_names_the_dump_by_time(aws, tmp_path):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="backups")
    dump = tmp_path / "pynomaly.dump"
    dump.write_bytes(b"PGDMP-content")
    key = upload_backup.upload(dump, "backups", "postgres", now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert key == "postgres/20260102T030405Z-pynomaly.dump"
    assert s3.get_object(Bucket="backups", Key=key)["Body"].read() == b"PGDMP-content"
    dump.write_bytes(b"")
    with pytest.raises(SystemExit, match="missing or empty; pg_dump did not produce a dump"):
        upload_backup.upload(dump, "backups", "postgres")


# ---------------------------------------------------------------------------
# The CronJob, run


def _expand(arg: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command arguments."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), arg)


@pytest.fixture
def postgres():
    server = PostgresServer(password="from-secrets-manager").init()
    server.ca_file = server.enable_tls()  # type: ignore[attr-defined]  # the stand-in for the RDS CA bundle
    server.start().create_app_database()
    # Owned by the application role, as on RDS (the master user creates the schema).
    server.psql("SET ROLE pynomaly; CREATE TABLE detections (id int primary key, score float)", "pynomaly")
    server.psql("INSERT INTO detections VALUES (1, 0.9)", "pynomaly")
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def moto():
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.mark.integration
def test_backup_cronjob_steps_dump_the_database_to_the_bucket(prod, postgres, moto, tmp_path, monkeypatch):
    (cron,) = prod.all("CronJob")
    spec = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    config = prod.get("ConfigMap", "pynomaly-config")["data"]
    bucket = next(e["value"] for e in spec["containers"][0]["env"] if e["name"] == "BACKUPS_BUCKET")
    secret_arn = next(e["value"] for e in spec["initContainers"][0]["env"] if e["name"] == "DB_SECRET_ARN")
    sm, s3 = moto.client("secretsmanager"), moto.client("s3")
    local_arn = sm.create_secret(
        Name=secret_arn.rsplit(":", 1)[-1],
        SecretString=json.dumps({"username": postgres.user, "password": postgres.password}),
    )["ARN"]
    s3.create_bucket(Bucket=bucket)

    # The pod's paths, mapped into tmp_path; the platform's endpoints, mapped to the local servers.
    paths = {
        pod_specs.SCRIPTS_DIR: str(SCRIPTS),
        pod_specs.DB_DIR: str(tmp_path / "db"),
        BACKUP_DIR: str(tmp_path / "backup"),
    }
    (tmp_path / "backup").mkdir()
    dsn = re.sub(r"host=\S+ port=\d+", f"host=127.0.0.1 port={postgres.port}", config["PYNOMALY_DB_DSN"])
    assert "sslmode=verify-full" in dsn  # the server is verified against the CA bundle, for real below
    executables = {"python": sys.executable, "pg_dump": str(PG_BIN / "pg_dump")}

    def local(value: str) -> str:
        for pod_path, here in paths.items():
            value = value.replace(pod_path, here)
        return value

    for container in [*spec["initContainers"], *spec["containers"]]:
        env = {**config, "PYNOMALY_DB_DSN": dsn}
        env |= {e["name"]: local(e["value"]) for e in container["env"] if "value" in e}
        env |= {"DB_SECRET_ARN": local_arn, "DB_CA_SOURCE": str(postgres.ca_file)} if "DB_SECRET_ARN" in env else {}
        env |= {**moto.aws_env(), "AWS_ENDPOINT_URL": moto.endpoint_url, "PATH": os.environ["PATH"]}
        command = [local(_expand(arg, env)) for arg in container["command"]]
        command[0] = executables.get(command[0], command[0])
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{container['name']}: {command}\n{proc.stderr}"

    # The service file let libpq log in with the secret's password (as the API's pool does).
    service_file = tmp_path / "db" / "pg_service.conf"
    monkeypatch.setenv("PGSERVICEFILE", str(service_file))
    monkeypatch.setenv("PGSSLROOTCERT", local(pod_specs.RDS_CA_FILE))  # the copy the init container left
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (postgres.user,)
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
    # A server whose certificate does not chain to the bundle is refused, not talked to.
    monkeypatch.setenv("PGSSLROOTCERT", certifi.where())
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(dsn)

    (obj,) = s3.list_objects_v2(Bucket=bucket, Prefix="postgres/")["Contents"]
    assert obj["Key"].endswith("-pynomaly.dump") and obj["Size"] > 0
    dump = tmp_path / "downloaded.dump"
    s3.download_file(bucket, obj["Key"], str(dump))
    listing = subprocess.run(
        [str(PG_BIN / "pg_restore"), "--list", str(dump)], capture_output=True, text=True, check=True
    )
    assert "TABLE public detections" in listing.stdout and "TABLE DATA public detections" in listing.stdout


def test_the_ca_bundle_is_copied_beside_the_credentials_and_a_missing_one_stops_the_pod(aws, tmp_path):
    sm = boto3.client("secretsmanager")
    arn = sm.create_secret(Name="db", SecretString=json.dumps({"username": "u", "password": "p"}))["ARN"]
    out, ca = tmp_path / "db" / "pg_service.conf", tmp_path / "db" / "rds-ca.pem"
    common = ["--secret-arn", arn, "--out", str(out), "--ca-out", str(ca)]
    db_credentials.main([*common, "--ca-source", certifi.where()])
    assert ca.read_text() == Path(certifi.where()).read_text()
    assert db_credentials.CA_SOURCE == pod_specs.RDS_CA_SOURCE  # the script's default is where the image puts it
    with pytest.raises(SystemExit, match=r"the RDS CA bundle .* cannot be read"):
        db_credentials.main([*common, "--ca-source", str(tmp_path / "missing.pem")])
    (tmp_path / "portal.html").write_text("<html>sign in to the Wi-Fi</html>")
    with pytest.raises(SystemExit, match="holds no PEM certificate"):
        db_credentials.main([*common, "--ca-source", str(tmp_path / "portal.html")])


def test_every_container_that_connects_verifies_the_server_with_the_copied_bundle(prod):
    for kind in ("Deployment", "CronJob"):
        for obj in prod.all(kind):
            spec = (
                obj["spec"]["template"]["spec"]
                if kind == "Deployment"
                else obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            )
            for container in [*spec.get("initContainers", []), *spec["containers"]]:
                env = {e["name"]: e.get("value") for e in container.get("env", [])}
                if "PGSERVICEFILE" in env:
                    assert env["PGSSLROOTCERT"] == pod_specs.RDS_CA_FILE, container["name"]
