"""The running stack's settings, from the configuration Pulumi hands the program.

The settings model and its validation are Pulumi-free (pynomaly_ops.settings); only reading Pulumi's
runtime configuration belongs here.
"""

from __future__ import annotations

import pulumi
from pulumi.runtime import config as runtime_config

from pynomaly_ops.settings import StackSettings, build, split_namespaces


def from_pulumi() -> StackSettings:
    """Settings of the running stack, from the config Pulumi hands the program."""
    raw = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    project, region = split_namespaces(raw)
    return build(pulumi.get_stack(), project, region)
