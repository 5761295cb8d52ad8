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

import pytest
from infra_helpers import heredoc, secret_values, user_data

from infra import app_fleet, pod_specs
from pynomaly_ops import outputs as keys
from service.config import ENV_NAMES, load_settings, require

ROOT = Path(__file__).resolve().parents[2]
UNITS_DIR = ROOT / "deploy" / "systemd"
INSTALL = ROOT / "deploy" / "ami" / "install.sh"
HARDENING = UNITS_DIR / "hardening.conf"
ALL_UNITS = (*app_fleet.SERVICE_UNITS, *app_fleet.DB_CREDENTIALS_UNITS)
CREDENTIALS_SERVICE, CREDENTIALS_TIMER = app_fleet.DB_CREDENTIALS_UNITS
INSTANCE_ID = "i-0123456789abcdef0"


# -- helpers -------------------------------------------------------------------------------------------------------


def env_file(script: str) -> str:
    """The environment file the user data leaves behind, with the instance id IMDS would give."""
    appended = re.search(r'echo "(\w+)=\$instance_id" >> ', script)
    assert appended, "the user data must append the instance id"
    return heredoc(script, "ENV") + f"\n{appended.group(1)}={INSTANCE_ID}\n"


def parse_env(text: str, tmp_path: Path) -> dict[str, str]:
    """Read the file the way a shell does (systemd's EnvironmentFile quoting is the same for these values)."""
    path = tmp_path / "pynomaly.env"
    path.write_text(text)
    dump = subprocess.run(
        ["env", "-i", "bash", "-c", 'set -a; . "$1"; env -0', "_", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    env = dict(item.split("=", 1) for item in dump.split("\0") if item)
    return {k: v for k, v in env.items() if k not in {"PWD", "SHLVL", "_"}}


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
    """The unit's drop-ins on an instance: hardening from the AMI (install.sh), Redis AUTH from the user data."""
    found = {"10-hardening.conf": HARDENING.read_text()} if name in install_array("HARDENED") else {}
    if name in app_fleet.SERVICE_UNITS:
        found[app_fleet.REDIS_DROP_IN] = app_fleet.redis_drop_in()
    return found


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


def test_env_file_points_the_service_at_this_stacks_tiers(r, instance_env, cfg):
    out = r.outputs
    env = instance_env
    dsn = dict(item.split("=", 1) for item in shlex.split(env[ENV_NAMES["db_dsn"]]))
    assert dsn["host"] == out[keys.DB_WRITER_ENDPOINT] and dsn["port"] == "5432"
    assert dsn["sslmode"] == "require" and dsn["service"] == env["PGSERVICE"]
    assert "," not in dsn["host"] and not {"user", "password", "passfile"} & dsn.keys()
    assert env[ENV_NAMES["redis_url"]] == f"rediss://{out[keys.REDIS_PRIMARY_ENDPOINT]}:6379/0"
    assert env[ENV_NAMES["queue_url"]] == out[keys.QUEUE_URL]
    assert env[ENV_NAMES["artifacts_bucket"]] == out[keys.ARTIFACTS_BUCKET]
    assert env[ENV_NAMES["port"]] == str(cfg.fleet.app_port) and env[ENV_NAMES["host"]] == "0.0.0.0"
    assert env[ENV_NAMES["instance_id"]] == INSTANCE_ID
    # Where the credentials unit finds the password, and where it writes it for libpq: the pods' file.
    assert env["DB_SECRET_ARN"] == out[keys.DB_SECRET_ARN]
    assert env["PGSERVICEFILE"] == pod_specs.PG_SERVICE_FILE
    assert env["AWS_DEFAULT_REGION"] == cfg.region


def test_the_cloudwatch_agent_scrapes_the_worker_for_the_processing_lag(r, stack, instance_env):
    scrape = json.loads(heredoc(user_data(r, stack), "PROMETHEUS"))["scrape_configs"][0]
    targets = [t for config in scrape["static_configs"] for t in config["targets"]]
    assert f"127.0.0.1:{instance_env[ENV_NAMES['worker_metrics_port']]}" in targets
    assert len(targets) == 2  # the API (through the proxy) and the worker


def test_the_service_loader_accepts_the_env_file_as_the_units_run_it(instance_env, tmp_path):
    token = tmp_path / "redis-password"  # what LoadCredential hands the unit
    token.write_text("not-the-real-token\n")
    redis_file = ENV_NAMES["redis_password_file"]
    drop_in = installed(app_fleet.SERVICE_UNITS[0])["Service"]["Environment"]
    assert drop_in.startswith(f"{redis_file}=%d/")
    settings = load_settings({**instance_env, redis_file: str(token)})
    assert settings.redis_password_file == str(token) and settings.redis_password is None
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
    assert not [n for n in names if re.search("PASSWORD|TOKEN|SECRET(?!_ARN)", n)], names


def test_units_start_only_after_the_env_file_and_the_db_credentials(r, stack):
    script = user_data(r, stack)
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    assert script.startswith("#!/bin/bash\nset -euo pipefail\n")  # any failed step stops the boot script
    written = script.index(f"mv -f {app_fleet.ENV_FILE}.new {app_fleet.ENV_FILE}\n")
    assert f"install -m 0640 -o root -g {app_fleet.SERVICE_USER} /dev/null {app_fleet.ENV_FILE}.new" in script
    credentials = script.index(f"systemctl start {CREDENTIALS_SERVICE} ||")
    (starts,) = re.findall(r"^systemctl start (?!.*\|\|)(.*)$", script, re.M)
    assert set(starts.split()) == {CREDENTIALS_TIMER, *app_fleet.SERVICE_UNITS}
    assert script.index("get-secret-value") < written < credentials < script.index(f"systemctl start {starts}")
    assert script.index("getent group") < script.index("get-secret-value")  # an unbaked AMI fails first


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
def test_stop_timeout_outlasts_the_graceful_shutdown(name, instance_env):
    service = installed(name)["Service"]
    drain = load_settings(instance_env).shutdown_timeout_s  # PYNOMALY_SHUTDOWN_TIMEOUT_S as the units get it
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
