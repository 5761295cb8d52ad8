"""service.config.ENV_NAMES: the one list of the service's variables that other code (the EC2 user data) uses."""

from __future__ import annotations

import inspect
import re
from dataclasses import fields

from service import config
from service.config import ENV_NAMES, Settings, load_settings


def test_every_setting_has_a_variable_and_the_loader_reads_exactly_those():
    assert set(ENV_NAMES) == {f.name for f in fields(Settings)}
    read = set(re.findall(r'"(PYNOMALY_\w+)"', inspect.getsource(config.load_settings)))
    assert read == set(ENV_NAMES.values())


def test_a_variable_named_through_the_mapping_reaches_its_setting():
    s = load_settings({ENV_NAMES["queue_url"]: "https://sqs.example/q", ENV_NAMES["shutdown_timeout_s"]: "7.5"})
    assert (s.queue_url, s.shutdown_timeout_s) == ("https://sqs.example/q", 7.5)
