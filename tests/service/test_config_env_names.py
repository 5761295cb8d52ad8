"""The environment contract (pynomaly_ops/environment.py) is typed once: the service reads every setting
through ENV_NAMES, and no other code spells a setting's PYNOMALY_* variable."""

from __future__ import annotations

import inspect
import re
from dataclasses import fields

import pytest

from pynomaly_ops import REPO_ROOT
from pynomaly_ops.environment import ENV_NAMES, Settings, UnknownSetting, environment
from service import config
from service.config import load_settings

# Code that writes or reads the service's environment; tests and docs name variables as users do.
CODE_DIRS = ("service", "infra", "local", "pynomaly_ops", "pynomaly_cli", "benchmarks", "drills", "loadtests")
EXEMPT = {
    REPO_ROOT / "pynomaly_ops" / "environment.py",  # the contract itself
    # Shipped to the pods as standalone files in a ConfigMap: they import nothing of the project.
    *(REPO_ROOT / "infra" / "pod_scripts").glob("*.py"),
}


def _spelled() -> re.Pattern[str]:
    """A setting's variable as a string literal of its own (docstrings and comments may name it)."""
    return re.compile("|".join(rf"""["']{re.escape(v)}["']""" for v in ENV_NAMES.values()))


def test_every_setting_has_a_variable_and_the_loader_reads_exactly_those():
    assert set(ENV_NAMES) == {f.name for f in fields(Settings)}
    read = set(re.findall(r'ENV_NAMES\["(\w+)"\]', inspect.getsource(config.load_settings)))
    assert read == set(ENV_NAMES)


def test_no_code_spells_a_setting_variable_outside_the_contract():
    spelled = _spelled()
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{n}"
        for d in CODE_DIRS
        for path in sorted((REPO_ROOT / d).rglob("*.py"))
        if path not in EXEMPT
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if spelled.search(line)
    ]
    assert offenders == []


def test_a_variable_named_through_the_mapping_reaches_its_setting():
    s = load_settings({ENV_NAMES["queue_url"]: "https://sqs.example/q", ENV_NAMES["shutdown_timeout_s"]: "7.5"})
    assert (s.queue_url, s.shutdown_timeout_s) == ("https://sqs.example/q", 7.5)


def test_environment_writes_what_the_loader_reads():
    env = environment(port=8123, redis_sentinels=[("127.0.1.1", 26379), ("127.0.2.1", 26379)], detector_processes=0)
    s = load_settings(env)
    assert (s.port, s.redis_sentinels, s.detector_processes) == (8123, (("127.0.1.1", 26379), ("127.0.2.1", 26379)), 0)


def test_environment_refuses_a_name_that_is_not_a_setting():
    with pytest.raises(UnknownSetting, match="not a service setting: db_url"):
        environment(db_url="postgres://")


def test_the_scan_finds_a_spelled_variable():
    """The offenders check above can fail: it finds a setting's variable in a line of code."""
    spelled = _spelled()
    assert spelled.search('env["PYNOMALY_DB_DSN"] = dsn')
    assert not spelled.search("the service reads PYNOMALY_DB_DSN")  # prose may name it
    assert not spelled.search('env["PYNOMALY_LOCAL_STATE"] = path')  # the local stack's own variables are not settings
