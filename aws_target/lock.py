"""One drill per stack at a time: the stack's lock, an SSM parameter (the local stack's is a file lock)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any

from aws_target.target import resolve

LOCK_PARAMETER = "/pynomaly/{stack}/drill-lock"  # docs/aws-drill-permissions.json allows exactly this one


class DrillLocked(RuntimeError):
    """Another drill holds the stack's lock."""


class ParameterLock:
    """A stack's lock on AWS: an SSM parameter that exists while a drill runs. Creating it is atomic (PutParameter
    without Overwrite fails if it exists), so two operators, or a scheduled drill and a manual one, never break
    one stack at once. A runner killed outright leaves it: the error says who held it and how to remove it."""

    def __init__(self, stack: str) -> None:
        self.name = LOCK_PARAMETER.format(stack=stack)
        self.held = False
        self._holder = ""  # the value we wrote: release removes the parameter only while it is still ours

    def _ssm(self) -> Any:
        return resolve().client("ssm")

    def acquire(self, drill: str) -> None:
        ssm = self._ssm()
        holder = {"drill": drill, "host": os.uname().nodename, "pid": os.getpid(), "since": time.time()}
        try:
            self._holder = json.dumps(holder)
            ssm.put_parameter(Name=self.name, Value=self._holder, Type="String", Overwrite=False,
                              Description="a pynomaly drill is running on this stack")  # fmt: skip
        except ssm.exceptions.ParameterAlreadyExists:
            held = ssm.get_parameter(Name=self.name)["Parameter"]["Value"]
            raise DrillLocked(
                f"another drill holds the stack's lock {self.name} ({held}); wait for it to finish, or, if no drill "
                f"is running, remove it: aws ssm delete-parameter --name {self.name}"
            ) from None
        self.held = True

    def release(self) -> None:
        """Remove the lock if it is still ours: an operator may have deleted it and another drill taken it since
        (the read and the delete are two calls; SSM has no conditional delete)."""
        if self.held:
            ssm = self._ssm()
            with contextlib.suppress(ssm.exceptions.ParameterNotFound):
                if ssm.get_parameter(Name=self.name)["Parameter"]["Value"] == self._holder:
                    ssm.delete_parameter(Name=self.name)
            self.held = False
