"""Load and validate ``baselines.yaml``, the one file of runbook numbers.

Infra alarms, Prometheus rules, the HPA, drills and load tests all call
:func:`load`; none of them types a runbook number of its own.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from pynomaly_ops import REPO_ROOT

DEFAULT_PATH = REPO_ROOT / "baselines.yaml"
# Points every reader at another copy of the numbers file (tests, what-if runs).
PATH_ENV = "PYNOMALY_BASELINES"


def default_path() -> Path:
    """The numbers file in use: ``$PYNOMALY_BASELINES`` if set, else the repo's."""
    return Path(os.environ.get(PATH_ENV) or DEFAULT_PATH)


class BaselinesError(ValueError):
    """The numbers file is missing, malformed or inconsistent."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


NonNegative = Field(ge=0)


class Level(_Strict):
    """A warning/critical pair; the warning must sit below the critical."""

    warning: float = NonNegative
    critical: float = NonNegative

    @model_validator(mode="after")
    def _warning_below_critical(self) -> Level:
        if self.warning >= self.critical:
            raise ValueError(f"warning ({self.warning:g}) must be below critical ({self.critical:g})")
        return self

    def at(self, severity: Severity) -> float:
        return getattr(self, severity)


Severity = Literal["warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("warning", "critical")


class Thresholds(_Strict):
    source: str
    cpu_percent: Level
    memory_percent: Level
    disk_percent: Level
    response_time_p95_ms: Level
    error_rate_percent: Level

    def levels(self) -> dict[str, Level]:
        """Every threshold by name, for code that must cover them all."""
        return {k: v for k, v in self if isinstance(v, Level)}


class Band(_Strict):
    min: float = Field(default=0, ge=0)
    max: float = NonNegative

    @model_validator(mode="after")
    def _ordered(self) -> Band:
        if self.min > self.max:
            raise ValueError(f"min ({self.min:g}) must not exceed max ({self.max:g})")
        return self


class Normal(_Strict):
    source: str
    cpu_percent: Band
    memory_percent: Band
    response_time_avg_ms: Band
    error_rate_percent: Band


_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class PeakHours(_Strict):
    start: str
    end: str
    timezone: str

    @model_validator(mode="after")
    def _valid(self) -> PeakHours:
        for name in ("start", "end"):
            if not _HHMM.match(getattr(self, name)):
                raise ValueError(f"{name} must be HH:MM, got {getattr(self, name)!r}")
        if self.start >= self.end:
            raise ValueError("start must be before end")
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {self.timezone!r}") from exc
        return self


class Traffic(_Strict):
    source: str
    peak_hours: PeakHours
    peak_multiplier: float = Field(gt=0)
    weekend_fraction: float = Field(gt=0)
    holiday_fraction: float = Field(gt=0)


_QUANTITY = r"^\d+(\.\d+)?(m|Ki|Mi|Gi|Ti)?$"


class PodResources(_Strict):
    """A Kubernetes pod's CPU and memory, as Kubernetes quantities (750m, 2Gi)."""

    cpu: str = Field(pattern=_QUANTITY)
    memory: str = Field(pattern=_QUANTITY)


class Scaling(_Strict):
    source: str
    instances_normal: int = Field(ge=1)
    instances_high_load: int = Field(ge=1)
    pods_min: int = Field(ge=1)
    pods_max: int = Field(ge=1)
    target_cpu_percent: float = Field(gt=0, le=100)
    target_memory_percent: float = Field(gt=0, le=100)
    pod_requests: PodResources
    pod_limits: PodResources

    @model_validator(mode="after")
    def _ordered(self) -> Scaling:
        if self.instances_normal > self.instances_high_load:
            raise ValueError("instances_normal must not exceed instances_high_load")
        if self.pods_min > self.pods_max:
            raise ValueError("pods_min must not exceed pods_max")
        return self


class AppAlarms(_Strict):
    source: str
    inference_time_s: float = NonNegative
    processing_lag_s: float = NonNegative
    auth_failure_rate_percent: float = NonNegative


class DatabaseFailover(_Strict):
    rto_s: float = NonNegative
    acknowledged_writes_lost: int = NonNegative


class InstanceLoss(_Strict):
    max_error_rate: Severity
    capacity_back_s: PerTarget


class CacheFailover(_Strict):
    rto_s: float = NonNegative
    max_error_rate: Severity


class CacheFlush(_Strict):
    max_error_rate: Severity
    p95_back_s: float = Field(gt=0)


class TrafficSpike(_Strict):
    p95_back_s: float = Field(gt=0)


class BadDeploy(_Strict):
    max_error_rate: Severity
    rollback_s: float = Field(gt=0)


class Maintenance(_Strict):
    switch_s: float = Field(gt=0)


class QueueBacklog(_Strict):
    drain_within: Literal["processing_lag_s"]


class Backups(_Strict):
    max_age_s: float = Field(gt=0)
    restore_rto_s: float = Field(gt=0)
    rows_differing: int = NonNegative


class ObjectRestore(_Strict):
    rto_s: float = Field(gt=0)
    objects_differing: int = NonNegative


class PerTarget(_Strict):
    """A time that differs by target: processes on one machine (``local``) or AWS's services (``aws``)."""

    local: float = Field(gt=0)
    aws: float = Field(gt=0)


class PointInTime(_Strict):
    rpo_s: PerTarget
    restore_rto_s: float = Field(gt=0)
    rows_differing: int = NonNegative


class Disaster(_Strict):
    rto_s: float = Field(gt=0)


class ConfigBackup(_Strict):
    files_differing: int = NonNegative


class AzOutage(_Strict):
    """A whole zone lost (cut off or powered off); its write outage and data loss are database_failover's."""

    rejoin_s: float = Field(gt=0)
    split_brain_writes: int = NonNegative
    second_outage_s: float = NonNegative
    leader_changes_on_heal: int = NonNegative


class PodLoss(_Strict):
    max_error_rate: Severity
    pods_back_s: float = Field(gt=0)


class NodeDrain(_Strict):
    max_error_rate: Severity
    rescheduled_s: float = Field(gt=0)


class Recovery(_Strict):
    source: str
    database_failover: DatabaseFailover
    instance_loss: InstanceLoss
    cache_failover: CacheFailover
    cache_flush: CacheFlush
    traffic_spike: TrafficSpike
    bad_deploy: BadDeploy
    maintenance: Maintenance
    queue_backlog: QueueBacklog
    backups: Backups
    object_restore: ObjectRestore
    point_in_time: PointInTime
    disaster: Disaster
    config_backup: ConfigBackup
    az_outage: AzOutage
    pod_loss: PodLoss
    node_drain: NodeDrain
    drill_load_per_s: float = Field(gt=0, le=200)  # bounded: drills send traffic to this machine only
    abort_after_s: float = Field(gt=0)


class Database(_Strict):
    source: str
    max_connections: int = Field(ge=1)
    shared_buffers_mb: int = Field(ge=1)
    effective_cache_size_mb: int = Field(ge=1)
    replica_lag_s: Level


class Load(_Strict):
    """The load tests' normal rate per target (the platform team's numbers) and their run settings."""

    source: str
    normal_rate_per_s: dict[str, float]
    abort_after_s: float = Field(gt=0)
    ramp_up_s: float = Field(ge=0)
    step_s: float = Field(gt=0)

    @model_validator(mode="after")
    def _rates(self) -> Load:
        missing = {"local", "default"} - set(self.normal_rate_per_s)
        if missing:
            raise ValueError(f"normal_rate_per_s needs the targets {', '.join(sorted(missing))}")
        bad = sorted(k for k, v in self.normal_rate_per_s.items() if v <= 0)
        if bad:
            raise ValueError(f"normal_rate_per_s must be above 0 for {', '.join(bad)}")
        return self

    def normal_rate(self, target: str) -> float:
        """Requests/s at normal load for ``target`` (``local``, a stack name), else the ``default`` one."""
        return self.normal_rate_per_s.get(target, self.normal_rate_per_s["default"])


class Abuse(_Strict):
    """Limits on hostile traffic: rate limits at the load balancer, the refused-key cache, parsing concurrency."""

    source: str
    rate_window_s: float = Field(gt=0)
    rate_headroom: float = Field(gt=1)
    auth_failures_per_window: int = Field(ge=1)
    retry_after_s: int = Field(ge=1)
    refused_key_cache_s: float = Field(ge=0)
    parse_concurrency: int = Field(ge=1)


class Baselines(_Strict):
    thresholds: Thresholds
    normal: Normal
    traffic: Traffic
    scaling: Scaling
    app_alarms: AppAlarms
    recovery: Recovery
    database: Database
    load: Load
    abuse: Abuse

    # Objectives that refer to other numbers resolve here, so no number is
    # typed twice in the file.
    @property
    def instance_loss_max_error_rate_percent(self) -> float:
        return self.error_rate_percent(self.recovery.instance_loss.max_error_rate)

    def error_rate_percent(self, level: Severity) -> float:
        """The error-rate threshold an objective names by level."""
        return self.thresholds.error_rate_percent.at(level)

    @property
    def queue_backlog_drain_s(self) -> float:
        return getattr(self.app_alarms, self.recovery.queue_backlog.drain_within)

    def request_limit_per_s(self, target: str) -> float:
        """Requests/s one client address (or one API key) may send to /api/ on ``target`` before 429:
        the headroom times the load tests' peak rate there, so a load test never meets it."""
        return self.abuse.rate_headroom * self.traffic.peak_multiplier * self.load.normal_rate(target)


def _describe(error: ErrorDetails) -> str:
    key = ".".join(str(p) for p in error["loc"])
    kind = error["type"]
    if kind == "missing":
        return f"{key}: missing (add it)"
    if kind == "extra_forbidden":
        return f"{key}: unknown key (remove it or fix its spelling)"
    return f"{key}: {error['msg']}"


def parse(data: object, path: Path | str | None = None) -> Baselines:
    path = path or default_path()
    try:
        return Baselines.model_validate(data)
    except ValidationError as exc:
        problems = "\n  ".join(_describe(e) for e in exc.errors())
        raise BaselinesError(f"{path}: invalid runbook numbers:\n  {problems}") from None


def load(path: Path | str | None = None) -> Baselines:
    """Read and validate the numbers file (default: :func:`default_path`);
    errors name the file and the key."""
    return _load(Path(path or default_path()).resolve())


@lru_cache(maxsize=8)
def _load(path: Path) -> Baselines:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BaselinesError(
            f"{path}: not found. The project must be installed editable "
            "(pip install -e .) so the numbers file next to it can be read."
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BaselinesError(f"{path}: not valid YAML: {exc}") from None
    return parse(data, path)
