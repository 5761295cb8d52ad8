"""An app instance can serve: the user data writes the service's environment from the other tiers' outputs (no
secret in it) and then starts the units the AMI brings (deploy/systemd, baked by deploy/ami/install.sh)."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import boto3
import certifi
import pytest
from infra_helpers import INSTANCE_ID, env_file, heredoc, parse_env, secret_values, user_data
from moto import mock_aws

from infra import app_fleet, pod_specs
from infra.pod_scripts import db_credentials
from pynomaly_ops import outputs as keys
from service.cache import PasswordFile
from service.config import ENV_NAMES, load_settings, require

ROOT = Path(__file__).resolve().parents[2]
UNITS_DIR = ROOT / "deploy" / "systemd"
INSTALL = ROOT / "deploy" / "ami" / "install.sh"
HARDENING = UNITS_DIR / "hardening.conf"
ALL_UNITS = (*app_fleet.SERVICE_UNITS, *app_fleet.DB_CREDENTIALS_UNITS)
CREDENTIALS_SERVICE, CREDENTIALS_TIMER = app_fleet.DB_CREDENTIALS_UNITS


# -- helpers -------------------------------------------------------------------------------------------------------


def install_array(name: str) -> list[str]:
    """An array assignment of the bake script (which units it hardens, which it enables)."""
    match = re.search(rf"^{name}=\((.*?)\)$", INSTALL.read_text(), re.M)
    assert match, name
    return match.group(1).split()


def unit(name: str, *drop_ins: str) -> configparser.ConfigParser:
    """A unit with its drop-ins, later files overriding earlier ones, as systemd merges them."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, empty_lines_in_values=False)
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string((UNITS_DIR / name).read_text())
    for text in drop_ins:
        parser.read_string(text)
    return parser


def drop_ins(name: str) -> dict[str, str]:
    """The unit's drop-ins on an instance: the hardening from the AMI (install.sh)."""
    return {"10-hardening.conf": HARDENING.read_text()} if name in install_array("HARDENED") else {}


def installed(name: str) -> configparser.ConfigParser:
    return unit(name, *drop_ins(name).values())


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, f"unsupported time span {value!r}"
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


# -- the environment file ------------------------------------------------------------------------------------------


@pytest.fixture
def instance_env(r, stack, tmp_path) -> dict[str, str]:
    return parse_env(env_file(user_data(r, stack)), tmp_path)


@pytest.fixture
def started_env(instance_env, tmp_path) -> dict[str, str]:
    """The units' environment once pynomaly-db-credentials has run: the Redis token file exists (here in tmp)."""
    token = tmp_path / "redis-password"
    token.write_text("not-the-real-token\n")
    return {**instance_env, ENV_NAMES["redis_password_file"]: str(token)}


def test_env_file_points_the_service_at_this_stacks_tiers(r, instance_env, cfg):
    out = r.outputs
    env = instance_env
    dsn = dict(item.split("=", 1) for item in shlex.split(env[ENV_NAMES["db_dsn"]]))
    assert dsn["host"] == out[keys.DB_WRITER_ENDPOINT] and dsn["port"] == "5432"
    assert dsn["sslmode"] == "verify-full" and dsn["service"] == env["PGSERVICE"]
    assert env["PGSSLROOTCERT"] == pod_specs.RDS_CA_FILE  # the bundle the credentials unit copies beside it
    assert "," not in dsn["host"] and not {"user", "password", "passfile"} & dsn.keys()
    assert env[ENV_NAMES["redis_url"]] == f"rediss://{out[keys.REDIS_PRIMARY_ENDPOINT]}:6379/0"
    assert env[ENV_NAMES["queue_url"]] == out[keys.QUEUE_URL]
    assert env[ENV_NAMES["artifacts_bucket"]] == out[keys.ARTIFACTS_BUCKET]
    assert env[ENV_NAMES["port"]] == str(cfg.fleet.app_port) and env[ENV_NAMES["host"]] == "0.0.0.0"
    assert env[ENV_NAMES["instance_id"]] == INSTANCE_ID
    # Where the credentials unit finds the password, and where it writes it for libpq: the pods' file.
    assert env["DB_SECRET_ARN"] == out[keys.DB_SECRET_ARN]
    assert env["PGSERVICEFILE"] == pod_specs.PG_SERVICE_FILE
    # ... and the Redis AUTH token: the same unit refreshes it (every SECRET_REFRESH_S) into the file the service
    # reads on every new connection, so a rotated token needs no restart.
    assert env[pod_specs.REDIS_SECRET_ENV] == out[keys.REDIS_AUTH_SECRET_ARN]
    assert env[ENV_NAMES["redis_password_file"]] == pod_specs.REDIS_PASSWORD_FILE
    assert env["AWS_DEFAULT_REGION"] == cfg.region


def test_the_cloudwatch_agent_scrapes_the_worker_for_the_processing_lag(r, stack, instance_env):
    scrape = json.loads(heredoc(user_data(r, stack), "PROMETHEUS"))["scrape_configs"][0]
    targets = [t for config in scrape["static_configs"] for t in config["targets"]]
    assert f"127.0.0.1:{instance_env[ENV_NAMES['worker_metrics_port']]}" in targets
    assert len(targets) == 2  # the API (through the proxy) and the worker


def test_the_service_loader_accepts_the_env_file_as_the_units_run_it(instance_env, started_env):
    redis_file = ENV_NAMES["redis_password_file"]
    assert instance_env[redis_file] == pod_specs.REDIS_PASSWORD_FILE  # where pynomaly-db-credentials writes it
    settings = load_settings(started_env)
    assert settings.redis_password_file == started_env[redis_file] and settings.redis_password is None
    assert settings.aws_endpoint_url is None  # the real AWS endpoints
    for field in ("queue_url", "artifacts_bucket"):  # the worker's and the jobs API's required settings
        assert require(settings, field)
    unknown = {k for k in instance_env if k.startswith("PYNOMALY_")} - set(ENV_NAMES.values())
    assert not unknown, f"variables the service does not read: {unknown}"


def test_no_secret_value_reaches_theuser_data(r, stack):
    script = user_data(r, stack)
    secrets = set().union(*(secret_values(x.inputs) | secret_values(x.state) for x in r.resources))
    token = r.named(f"{stack}-cache-auth-token").state["result"]
    assert token in secrets
    assert not [s for s in secrets if len(s) >= 8 and s in script]
    names = [line.split("=", 1)[0] for line in heredoc(script, "ENV").splitlines()]
    # names of where a secret is (a file, an ARN) are fine; a variable holding one is not
    assert not [n for n in names if re.search("PASSWORD(?!_FILE$)|TOKEN|SECRET(?!_ARN$)", n)], names


def test_units_start_only_after_the_env_file_and_the_db_credentials(r, stack):
    script = user_data(r, stack)
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    assert script.startswith("#!/bin/bash\nset -euo pipefail\n")  # any failed step stops the boot script
    written = script.index(f"mv -f {app_fleet.ENV_FILE}.new {app_fleet.ENV_FILE}\n")
    assert f"install -m 0640 -o root -g {app_fleet.SERVICE_USER} /dev/null {app_fleet.ENV_FILE}.new" in script
    credentials = script.index(f"systemctl start {CREDENTIALS_SERVICE} ||")
    (starts,) = re.findall(r"^systemctl start (?!.*\|\|)(.*)$", script, re.M)
    assert set(starts.split()) == {CREDENTIALS_TIMER, *app_fleet.SERVICE_UNITS}
    # an unbaked AMI fails first; the credentials (DB password, Redis token) are written before the service starts
    assert script.index("getent group") < written < credentials < script.index(f"systemctl start {starts}")


# -- the units -----------------------------------------------------------------------------------------------------


def test_the_units_the_user_data_starts_are_in_deploy():
    shipped = {p.name for p in UNITS_DIR.glob("pynomaly-*") if p.suffix in {".service", ".timer"}}
    assert shipped == set(ALL_UNITS)
    assert set(install_array("ENABLED")) == {*app_fleet.SERVICE_UNITS, CREDENTIALS_TIMER}


@pytest.mark.parametrize("name", app_fleet.SERVICE_UNITS)
def test_service_units_are_hardened_and_wait_for_the_env_file(name):
    u = installed(name)
    service = u["Service"]
    assert service["User"] == service["Group"] == app_fleet.SERVICE_USER
    assert service["EnvironmentFile"] == u["Unit"]["ConditionPathExists"] == app_fleet.ENV_FILE
    assert (service["NoNewPrivileges"], service["ProtectSystem"], service["PrivateTmp"]) == ("yes", "strict", "yes")
    assert service["Restart"] == "on-failure" and service["CapabilityBoundingSet"] == ""
    assert "ReadWritePaths" not in service  # they write nothing but their private /tmp
    assert CREDENTIALS_SERVICE in u["Unit"]["Requires"] and CREDENTIALS_SERVICE in u["Unit"]["After"]
    assert u["Install"]["WantedBy"] == "multi-user.target"
    # The console script the unit runs is the one the project declares under that name.
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    command = Path(service["ExecStart"])
    assert command.name == name.removesuffix(".service") and command.name in scripts


@pytest.mark.parametrize("name", app_fleet.SERVICE_UNITS)
def test_stop_timeout_outlasts_the_graceful_shutdown(name, started_env):
    service = installed(name)["Service"]
    drain = load_settings(started_env).shutdown_timeout_s  # PYNOMALY_SHUTDOWN_TIMEOUT_S as the units get it
    assert seconds(service["TimeoutStopSec"]) >= drain + 5
    assert service["KillMode"] == "mixed"  # SIGTERM to the main process; the detector's children keep serving


def test_credentials_unit_writes_the_pods_file_and_refreshes_at_the_pods_period():
    service = installed(CREDENTIALS_SERVICE)["Service"]
    assert service["User"] == app_fleet.SERVICE_USER and service["Type"] == "oneshot"
    assert service["ExecStart"].endswith(" -m infra.pod_scripts.db_credentials")
    run_dir = Path(pod_specs.PG_SERVICE_FILE).parent
    assert Path("/run", service["RuntimeDirectory"]) == run_dir and service["RuntimeDirectoryPreserve"] == "yes"
    assert service["ProtectSystem"] == "strict"  # the runtime directory is its one writable path
    timer = unit(CREDENTIALS_TIMER)["Timer"]
    assert seconds(timer["OnUnitActiveSec"]) == seconds(timer["OnActiveSec"]) == pod_specs.SECRET_REFRESH_S


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    """A file tree laid out as install.sh lays out the AMI, for systemd-analyze --root."""
    root = tmp_path_factory.mktemp("image")
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    system = root / "etc/systemd/system"
    system.mkdir(parents=True)
    for name in ALL_UNITS:
        shutil.copy(UNITS_DIR / name, system / name)
        for file, text in drop_ins(name).items():
            (system / f"{name}.d").mkdir(exist_ok=True)
            (system / f"{name}.d" / file).write_text(text)
    for name in ("pynomaly-api", "pynomaly-worker", "python"):
        command = root / "opt/pynomaly/venv/bin" / name
        command.parent.mkdir(parents=True, exist_ok=True)
        command.write_text("#!/bin/sh\n")
        command.chmod(0o755)
    return root


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_units_pass_systemd_analyze_verify(image_root):
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={image_root}", *ALL_UNITS], capture_output=True, text=True
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
@pytest.mark.parametrize("name", (*app_fleet.SERVICE_UNITS, CREDENTIALS_SERVICE))
def test_units_expose_little_by_systemd_analyze_security(image_root, name):
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", f"--root={image_root}", name],
        capture_output=True,
        text=True,
    )
    score = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert score, result.stdout + result.stderr
    assert float(score.group(1)) <= 2.5, result.stdout  # systemd's "OK" band


# -- the bake script -----------------------------------------------------------------------------------------------


def test_bake_script_parses_and_never_starts_a_unit():
    subprocess.run(["bash", "-n", str(INSTALL)], check=True)
    text = INSTALL.read_text()
    assert 'systemctl enable "${ENABLED[@]}"' in text
    assert "--now" not in text and not re.search(r"systemctl (re)?start", text)
    assert set(install_array("HARDENED")) == {*app_fleet.SERVICE_UNITS, CREDENTIALS_SERVICE}


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck not installed (apt-get install shellcheck)")
def test_bake_script_passes_shellcheck():
    result = subprocess.run(["shellcheck", str(INSTALL)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_a_value_the_env_file_cannot_hold_is_refused_by_name():
    with pytest.raises(ValueError, match="PYNOMALY_QUEUE_URL, PYNOMALY_X"):
        app_fleet.env_file_text({"PYNOMALY_X": "", ENV_NAMES["queue_url"]: "a\nb", ENV_NAMES["port"]: "8000"})


def test_the_credentials_unit_keeps_the_redis_token_current_where_the_service_reads_it(
    instance_env, tmp_path, monkeypatch
):
    """pynomaly-db-credentials with the units' environment (ARNs and paths swapped for moto's and tmp's): it writes
    the token, and after a rotation its next run (the timer) writes the new one, which the service's next Redis
    connection reads: no restart."""
    redis_file = ENV_NAMES["redis_password_file"]
    with mock_aws():
        sm = boto3.client("secretsmanager", region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t")
        db_arn = sm.create_secret(Name="db", SecretString=json.dumps({"username": "u", "password": "p"}))["ARN"]
        redis_arn = sm.create_secret(Name="redis", SecretString="first-token")["ARN"]
        env = {
            **instance_env,
            "DB_SECRET_ARN": db_arn,
            pod_specs.REDIS_SECRET_ENV: redis_arn,
            "PGSERVICEFILE": str(tmp_path / "pg_service.conf"),
            redis_file: str(tmp_path / "redis-password"),
            "PGSSLROOTCERT": str(tmp_path / "rds-ca.pem"),
            "DB_CA_SOURCE": certifi.where(),  # the bundle the AMI carries, here a stand-in
            "AWS_ACCESS_KEY_ID": "t",
            "AWS_SECRET_ACCESS_KEY": "t",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        db_credentials.main([])
        provider = PasswordFile(load_settings(env).redis_password_file)
        assert provider.get_credentials() == ("first-token",)
        sm.put_secret_value(SecretId=redis_arn, SecretString="rotated-token")
        db_credentials.main([])  # the timer's next run
        assert provider.get_credentials() == ("rotated-token",)
