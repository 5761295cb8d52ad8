"""Which target a drill runs against: the local stack (the default) or a Pulumi stack on AWS.

The experiments are the same files for both. Their steps find the fault library's functions by name in the
target's modules (``local.faults`` or ``aws_target.faults``...), which take the same arguments; what differs is
read here: the target's outputs, its lock, its alarms and its shape. ``$PYNOMALY_DRILL_TARGET`` names the target
(the runner sets it; a plain ``chaos run`` reads it too), and the AWS stack is named as the AWS fault library
names it (``$PYNOMALY_AWS_STACK``, with ``$PYNOMALY_AWS_OUTPUTS`` for a saved ``pulumi stack output --json``).
"""

from __future__ import annotations

import fcntl
import inspect
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import IO, Any

from aws_target.lock import DrillLocked, ParameterLock
from drills.catalog import AWS, BOTH, LOCAL
from local.layout import state_dir_from
from local.recorders import recorder_url
from pynomaly_ops.environment import production_db_dsn
from pynomaly_ops.naming import API_KEY_ENV, DB_NAME, DRILL_DB_DSN_ENV
from pynomaly_ops.outputs import StackOutputs

TARGET_ENV = "PYNOMALY_DRILL_TARGET"
VIA_ENV = "PYNOMALY_DRILL_VIA"  # on AWS: "api" (the fault library's calls, the default) or "fis" (its templates)
VIA_API, VIA_FIS = "api", "fis"
LOCK_FILE = "drill.lock"
PRODUCTION = "prod"  # the stack a drill needs --confirm-production for


class DrillError(RuntimeError):
    """A drill cannot start or finish (its target cannot be named, read or locked...); the message says why."""


def current() -> str:
    chosen = os.environ.get(TARGET_ENV) or LOCAL
    if chosen not in BOTH:
        raise DrillError(f"${TARGET_ENV}={chosen!r}: the drills' targets are {', '.join(BOTH)}")
    return chosen


def via() -> str:
    """How faults are injected on AWS: the fault library's own API calls, or the stack's FIS templates."""
    chosen = os.environ.get(VIA_ENV) or VIA_API
    if chosen not in (VIA_API, VIA_FIS):
        raise DrillError(f"${VIA_ENV}={chosen!r}: faults go in via {VIA_API} or {VIA_FIS}")
    if chosen == VIA_FIS and current() != AWS:
        raise DrillError(f"--via {VIA_FIS} is for a stack on AWS (--target aws): the local stack has no FIS")
    return chosen


def stack_name() -> str:
    """The AWS stack's name (``--stack``): its lock, its production check and its reports carry it."""
    from aws_target.outputs import STACK_ENV

    name = os.environ.get(STACK_ENV)
    if not name:
        raise DrillError(f"no stack named for the aws target: pass --stack NAME (or set ${STACK_ENV})")
    return name


def describe() -> str:
    if current() == LOCAL:
        return "the local stack"
    return f"stack {stack_name()} on AWS" + (" via FIS" if via() == VIA_FIS else "")


# --- the fault library's modules ---------------------------------------------------------------------------------
def _modules(kind: str) -> tuple[ModuleType, ...]:
    if current() == LOCAL:
        from local import config_backup, disaster, faults, pitr, probes, recovery, vault

        local = {"faults": (faults,), "probes": (probes,), "recovery": (recovery, pitr, config_backup, vault, disaster)}
        return local[kind]
    from aws_target import faults as aws_faults
    from aws_target import kubernetes
    from aws_target import probes as aws_probes
    from aws_target import recovery as aws_recovery

    aws = {"faults": (aws_faults, kubernetes), "probes": (aws_probes, kubernetes), "recovery": (aws_recovery,)}
    return aws[kind]


def function(kind: str, name: str) -> Callable[..., Any]:
    """The fault library's ``name`` among the target's ``kind`` modules (``faults``, ``probes``, ``recovery``)."""
    modules = _modules(kind)
    found = next((getattr(m, name) for m in modules if callable(getattr(m, name, None))), None)
    if found is None:
        where = ", ".join(m.__name__ for m in modules)
        raise DrillError(f"{describe()} has no {kind} function {name!r} (looked in {where}): this drill is not "
                          f"one of the target's (`pynomaly-ops drill list` shows each drill's targets)")  # fmt: skip
    return found


def inject(drill: str, fault: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The drill's fault: the target's fault library function ``fault``, or on AWS via FIS, the stack's
    experiment template for ``drill`` in its place (aws_target/fis.py)."""
    if via() == VIA_FIS:
        from aws_target import fis

        return fis.inject(drill, fault)
    return function("faults", fault)(**arguments)


def stop_injected() -> list[str]:
    """Undo what :func:`inject` started that outlives its call: via FIS, the experiments still running (the
    experiments' rollbacks and the runner call it, whatever became of the drill)."""
    if current() != AWS or via() != VIA_FIS:
        return []
    from aws_target import fis

    return fis.stop_started()


def wait_timeout(wait: Callable[..., Any], asked: float | None) -> float | None:
    """On AWS a wait lasts at least the AWS function's own default: the experiments' timeouts are sized for
    processes on one machine, an Auto Scaling group or RDS takes minutes (the objectives still judge)."""
    if current() == LOCAL:
        return asked
    default = inspect.signature(wait).parameters.get("timeout_s")
    floor = default.default if default is not None and isinstance(default.default, int | float) else None
    return asked if floor is None or (asked is not None and asked >= floor) else floor


# --- the outputs --------------------------------------------------------------------------------------------
def outputs(state_dir: str | None = None) -> StackOutputs:
    """The target's outputs, with an API key (the local stack's own, or ``$PYNOMALY_API_KEY`` for a stack) and a
    load balancer this machine may send the drills' load to."""
    if current() == LOCAL:
        path = state_dir_from(Path(state_dir) if state_dir else None) / "outputs.json"
        if not path.exists():
            raise DrillError(f"no outputs at {path}: is the local stack up? (`pynomaly-ops local up`)")
        return StackOutputs.from_json_file(path)
    from aws_target.outputs import read

    found = read()
    key = os.environ.get(API_KEY_ENV) or found.api_key
    if not key:
        raise DrillError(f"the drills' load needs an API key of stack {stack_name()}: set ${API_KEY_ENV}")
    try:
        recorder_url(found.load_balancer_url)
    except ValueError as exc:
        raise DrillError(str(exc)) from None
    return found.model_copy(update={"api_key": key, "db_writer_dsn": writer_dsn(found)})


def writer_dsn(found: StackOutputs) -> str:
    """Where a drill's writes go on a stack (database-failover's RTO and RPO): ``$PYNOMALY_DRILL_DB_DSN``, else
    the writer endpoint as the service reaches it (``verify-full``, user and password from the libpq service
    file's ``[pynomaly]``: PGSERVICEFILE, PGSSLROOTCERT), so a failover is measured through the endpoint's DNS."""
    return os.environ.get(DRILL_DB_DSN_ENV) or production_db_dsn(found.db_writer_endpoint, DB_NAME)


# --- one drill per target at a time -----------------------------------------------------------------------------
class FileLock:
    """The local stack's lock: an exclusive flock on a file in its state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self, drill: str) -> None:
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise DrillError(f"another drill holds {self.path} ({holder}); wait for it to finish") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{drill} pid {os.getpid()} since {time.strftime('%H:%M:%S')}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class StackLock(ParameterLock):
    """A stack's lock on AWS (aws_target/lock.py: an SSM parameter), refusing with a DrillError like the file's."""

    def acquire(self, drill: str) -> None:
        try:
            super().acquire(drill)
        except DrillLocked as exc:
            raise DrillError(str(exc)) from None


def lock(state_dir: str | None = None) -> FileLock | StackLock:
    if current() == LOCAL:
        return FileLock(state_dir_from(Path(state_dir) if state_dir else None))
    return StackLock(stack_name())


# --- its alarms --------------------------------------------------------------------------------------------
def cloudwatch_keys(found: StackOutputs, keys: list[str] | None = None) -> list[str]:
    """The catalogue keys (of ``keys``, default all) the stack has a CloudWatch alarm for."""
    from pynomaly_ops.alarms import Target

    return [k for k, names in found.alarms.items() if Target.CLOUDWATCH in names and (keys is None or k in keys)]


def active_alarms(keys: list[str], state_dir: str | None = None) -> dict[str, str]:
    """Which of the catalogue alarms ``keys`` are active on the target: ``{key: "pending" | "firing"}``."""
    if current() == AWS:
        from aws_target import probes

        return probes.active_alarms(cloudwatch_keys(outputs(), keys))
    import httpx

    found = outputs(state_dir)
    if not found.prometheus_url:
        return {}
    names = {found.alarms[k][t]: k for k in keys if k in found.alarms for t in found.alarms[k]}
    alerts = httpx.get(f"{found.prometheus_url}/api/v1/alerts", timeout=3).json()["data"]["alerts"]
    active: dict[str, str] = {}
    for a in alerts:
        if (key := names.get(a["labels"].get("alertname", ""))) and active.get(key) != "firing":
            active[key] = a["state"]
    return active
