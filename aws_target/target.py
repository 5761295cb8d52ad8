"""A stack as the AWS fault library acts on it: its outputs, its region, and boto3 clients for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3

from aws_target import outputs as source
from pynomaly_ops.outputs import StackOutputs

# How often a wait asks an AWS API again: failovers and replacements take minutes, and every call counts
# against the account's API rate limits.
POLL_INTERVAL_S = 2.0


@dataclass(frozen=True)
class Target:
    outputs: StackOutputs
    region: str

    def client(self, service: str) -> Any:
        """A client of boto3's default session (its credentials, its endpoint configuration), made per call
        as chaostoolkit-aws makes them, in the stack's region."""
        return boto3.client(service, region_name=self.region)  # type: ignore[call-overload]

    def value(self, key: str) -> Any:
        """Output ``key``; an error naming the export if the stack has none."""
        return source.value(self.outputs, key)


def resolve(outputs: str | None = None, stack: str | None = None) -> Target:
    """The stack named by ``outputs`` (a saved ``pulumi stack output --json``) or ``stack`` (its name)."""
    read = source.read(outputs, stack)
    return Target(read, source.region(read))
