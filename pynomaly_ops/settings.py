"""Typed, validated stack settings.

Defaults come from the ``config:`` schema in Pulumi.yaml (the one place they
are written); a stack file overrides them. Everything is checked before any
resource is declared, and every error names the stack file and the key.
"""

from __future__ import annotations

import ipaddress
import json
import re
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import available_timezones

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from pynomaly_ops import REPO_ROOT

PROJECT = "pynomaly"
PROJECT_DIR = REPO_ROOT
PROJECT_FILE = PROJECT_DIR / "Pulumi.yaml"
STACKS_DIR = PROJECT_DIR / "stacks"
PRODUCTION_STACKS = frozenset({"prod"})
# Last day of EKS extended support per Kubernetes minor version (EKS release calendar): after it EKS refuses to
# create a cluster of that version. Versions older than the table are past it; newer ones are not listed yet.
EKS_EXTENDED_SUPPORT_ENDS = {
    "1.29": date(2026, 3, 23),
    "1.30": date(2026, 7, 23),
    "1.31": date(2026, 11, 26),
    "1.32": date(2027, 3, 23),
    "1.33": date(2027, 7, 29),
    "1.34": date(2027, 12, 2),
    "1.35": date(2028, 3, 27),
}
TLS12_POLICIES_PREFIX = ("ELBSecurityPolicy-TLS13-1-2", "ELBSecurityPolicy-TLS-1-2", "ELBSecurityPolicy-FS-1-2")
# The stack name starts every physical name (``<stack>-<tier>-<role>``). The tightest AWS limit: a target group name
# is at most 32 characters, and Pulumi auto-names it ``<stack>-lb-app-`` plus 7 random ones. S3 bucket, RDS and
# ElastiCache names also want lowercase letters, digits and single hyphens, starting with a letter.
STACK_NAME_MAX = 32 - len("-lb-app-") - 7
STACK_NAME_PATTERN = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"


class SettingsError(ValueError):
    """A stack's configuration is wrong; the message says where and how to fix it."""


class _Tier(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


ZONE_COUNT = 3  # every tier spreads over three AZs
ZONE_ID = re.compile(r"^[a-z]{2,5}\d+-az\d+$")  # use1-az1, euc1-az2, apse2-az3


class Network(_Tier):
    cidr: str
    nat_gateways: Literal["one_per_az", "single"]
    flow_logs_retention_days: int = Field(ge=1)
    # AZ IDs name the same physical zone in every account (names such as us-east-1a do not); empty: chosen.
    availability_zone_ids: list[str] = Field(default_factory=list)

    @field_validator("availability_zone_ids")
    @classmethod
    def _zone_ids(cls, v: list[str]) -> list[str]:
        if not v:
            return v
        bad = [z for z in v if not ZONE_ID.match(z)]
        if bad:
            raise ValueError(f"{', '.join(bad)}: not AZ IDs (like use1-az1; `aws ec2 describe-availability-zones`)")
        if len(set(v)) != ZONE_COUNT or len(v) != ZONE_COUNT:
            raise ValueError(f"needs {ZONE_COUNT} different AZ IDs, one per zone of every tier; got {v}")
        return v

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        net = ipaddress.ip_network(v)  # raises ValueError with a clear message
        if net.prefixlen > 20:
            raise ValueError("needs at least a /20 to hold 9 subnets")
        return v


class LoadBalancer(_Tier):
    certificate_arn: str
    ssl_policy: str
    deletion_protection: bool
    maintenance_mode: bool
    waf_rate_limit: int = Field(ge=100)  # per 5 minutes; WAF takes 10, but under 100 would refuse ordinary clients
    access_log_retention_days: int = Field(ge=1)

    @field_validator("certificate_arn")
    @classmethod
    def _arn(cls, v: str) -> str:
        if not v.startswith("arn:aws") or ":acm:" not in v:
            raise ValueError(
                "must be an ACM certificate ARN; set it with "
                "`pulumi config set lb.certificate_arn arn:aws:acm:REGION:ACCOUNT:certificate/ID`"
            )
        return v

    @field_validator("ssl_policy")
    @classmethod
    def _tls12(cls, v: str) -> str:
        if not v.startswith(TLS12_POLICIES_PREFIX):
            raise ValueError(f"must allow TLS 1.2+ only (one of {', '.join(TLS12_POLICIES_PREFIX)}*)")
        return v


class Fleet(_Tier):
    ami_id: str
    instance_type: str
    root_volume_gb: int = Field(ge=8)
    health_check_grace_s: int = Field(ge=0)
    app_port: int = Field(ge=1, le=65535)

    @field_validator("ami_id")
    @classmethod
    def _ami(cls, v: str) -> str:
        if not v.startswith("ami-"):
            raise ValueError("must be an AMI id; set it with `pulumi config set fleet.ami_id ami-...`")
        return v


class Database(_Tier):
    instance_class: str
    engine_version: str
    allocated_storage_gb: int = Field(ge=20)
    max_allocated_storage_gb: int
    multi_az: bool
    deletion_protection: bool
    backup_retention_days: int = Field(ge=7, le=35)
    read_replica: bool
    monitoring_interval_s: int

    @field_validator("monitoring_interval_s")
    @classmethod
    def _interval(cls, v: int) -> int:
        if v not in (1, 5, 10, 15, 30, 60):
            raise ValueError("must be one of 1, 5, 10, 15, 30, 60 (enhanced monitoring intervals)")
        return v

    @model_validator(mode="after")
    def _storage(self) -> Database:
        if self.allocated_storage_gb > self.max_allocated_storage_gb:
            raise _KeyError(
                "db.allocated_storage_gb",
                f"min > max: {self.allocated_storage_gb} exceeds db.max_allocated_storage_gb "
                f"({self.max_allocated_storage_gb}); raise the maximum or lower the initial storage",
            )
        return self


class Cache(_Tier):
    node_type: str
    engine_version: str
    replicas: int = Field(ge=1, le=5)
    snapshot_retention_days: int = Field(ge=1, le=35)


class Queue(_Tier):
    visibility_timeout_s: int = Field(ge=0, le=43200)
    max_receive_count: int = Field(ge=1, le=1000)
    receive_wait_s: int = Field(ge=0, le=20)
    message_retention_s: int = Field(ge=60, le=1209600)
    dlq_retention_s: int = Field(ge=60, le=1209600)


class Storage(_Tier):
    noncurrent_version_days: int = Field(ge=1)


class Backup(_Tier):
    enabled: bool
    retention_days: int = Field(ge=1)


class Alarms(_Tier):
    emails: list[str]

    @field_validator("emails")
    @classmethod
    def _emails(cls, v: list[str]) -> list[str]:
        bad = [e for e in v if "@" not in e]
        if bad:
            raise ValueError(f"not e-mail addresses: {', '.join(bad)}")
        return v


class Cluster(_Tier):
    enabled: bool
    version: str = Field(pattern=r"^1\.\d+$")
    public_access_cidrs: list[str]
    runner_in_vpc: bool = False
    kubernetes: bool = True
    admin_role_arns: list[str]
    node_instance_type: str
    node_disk_gb: int = Field(ge=20)
    node_min: int = Field(ge=1)
    node_desired: int = Field(ge=1)
    node_max: int = Field(ge=1)
    log_retention_days: int = Field(ge=1)
    load_balancer_controller: bool
    node_autoscaler: bool

    @field_validator("version")
    @classmethod
    def _eks_supports(cls, v: str) -> str:
        return eks_supported(v, date.today())

    @field_validator("public_access_cidrs")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        for cidr in v:
            ipaddress.ip_network(cidr)
            if cidr in ("0.0.0.0/0", "::/0"):
                raise ValueError("must not open the API endpoint to the whole internet")
        return v

    @model_validator(mode="after")
    def _sizes(self) -> Cluster:
        if not self.node_min <= self.node_desired <= self.node_max:
            raise _KeyError(
                "cluster.node_min",
                f"min > max: need cluster.node_min ({self.node_min}) <= cluster.node_desired "
                f"({self.node_desired}) <= cluster.node_max ({self.node_max})",
            )
        return self

    @property
    def declares_kubernetes(self) -> bool:
        """The stack declares Kubernetes resources (not in phase one of a private cluster's first deploy)."""
        return self.enabled and self.kubernetes

    @model_validator(mode="after")
    def _reachable(self) -> Cluster:
        """`pulumi up` declares the Kubernetes resources through the cluster's API: it must reach it."""
        if self.enabled and self.kubernetes and not self.public_access_cidrs and not self.runner_in_vpc:
            raise _KeyError(
                "cluster.public_access_cidrs",
                "is empty, so the EKS API endpoint is private and `pulumi up` cannot reach the cluster to declare "
                "its Kubernetes resources (on a first deploy no runner can be inside a VPC that does not exist "
                "yet). Either allow the runner's address: `pulumi config set --path "
                "'cluster.public_access_cidrs[0]' 203.0.113.7/32`; or deploy in two phases: `pulumi config set "
                "cluster.kubernetes false` and `pulumi up` (the AWS resources and the cluster), then, from a "
                "runner inside the VPC, `pulumi config set cluster.runner_in_vpc true`, `pulumi config set "
                "cluster.kubernetes true` and `pulumi up`",
            )
        return self

    @model_validator(mode="after")
    def _room_to_scale(self) -> Cluster:
        if self.node_autoscaler and self.node_min == self.node_max:
            raise _KeyError(
                "cluster.node_autoscaler",
                f"is on but cluster.node_min = cluster.node_max = {self.node_max}, so there is nothing to scale; "
                "raise cluster.node_max or set cluster.node_autoscaler false",
            )
        return self


def eks_supported(version: str, today: date) -> str:
    """``version`` if EKS still creates clusters of it on ``today``, else a ValueError saying which to use."""
    minor = lambda v: int(v.split(".")[1])  # noqa: E731
    oldest = min(EKS_EXTENDED_SUPPORT_ENDS, key=minor)
    end = EKS_EXTENDED_SUPPORT_ENDS.get(version, date.min if minor(version) < minor(oldest) else date.max)
    if today >= end:
        ended = "" if end == date.min else f" on {end}"
        raise ValueError(
            f"EKS no longer creates Kubernetes {version} clusters (extended support ended{ended}); "
            f"set it to {max(EKS_EXTENDED_SUPPORT_ENDS, key=minor)} or newer"
        )
    return version


K8S_QUANTITY = r"^\d+(\.\d+)?(m|Ki|Mi|Gi|Ti)?$"  # a Kubernetes CPU or memory quantity: 1000m, 4Gi


class Workload(_Tier):
    image_repository: str
    blue_tag: str
    green_tag: str
    active_color: Literal["blue", "green"]
    idle_replicas: int = Field(ge=0)
    worker_replicas: int = Field(ge=1)
    worker_termination_grace_s: int = Field(ge=1)
    prometheus_operator: bool
    backup_schedule: str
    worker_cpu: str = Field(pattern=K8S_QUANTITY)
    worker_memory: str = Field(pattern=K8S_QUANTITY)

    @property
    def idle_color(self) -> str:
        return "green" if self.active_color == "blue" else "blue"

    def tag(self, color: str) -> str:
        return self.blue_tag if color == "blue" else self.green_tag


class LoadGenerators(_Tier):
    """Locust on the stack's EKS cluster (infra/load_generators.py), driven by `load run --remote`."""

    enabled: bool
    workers: int = Field(ge=1, le=50)
    image_tag: str  # empty: the active colour's tag with "-loadgen" (deploy/image/Dockerfile's loadgen target)
    worker_cpu: str = Field(pattern=K8S_QUANTITY)
    worker_memory: str = Field(pattern=K8S_QUANTITY)


# The drills AWS FIS runs (infra/fault_injection.py declares a template each), in the order a schedule starts them;
# node-drain only where the stack has its EKS cluster, pod-loss only where it also declares the workload on it.
# drills/catalog.py names the drills.
FIS_DRILLS = ("instance-loss", "database-failover", "cache-failover", "node-drain", "pod-loss")
# EventBridge Scheduler's cron: six fields, minutes hours day-of-month month day-of-week year, exactly one of the two
# day fields "?" (Scheduler user guide, "Schedule types": cron expressions).
SCHEDULER_CRON = re.compile(r"^cron\((\S+) (\S+) (\S+) (\S+) (\S+) (\S+)\)$")
MINUTES_PER_DAY = 24 * 60


class FaultInjection(_Tier):
    """AWS FIS experiment templates for the monthly drills and, optionally, the schedule that starts them."""

    enabled: bool
    schedule: str  # EventBridge Scheduler cron of the first template's start; empty: started by hand only
    schedule_timezone: str
    schedule_interval_minutes: int = Field(ge=15, le=240)
    log_retention_days: int = Field(ge=1)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        if not v:
            return v
        found = SCHEDULER_CRON.match(v)
        if not found:
            raise ValueError(f"{v!r} is not an EventBridge Scheduler cron: cron(minutes hours day month weekday year)")
        minute, hour, day, _, weekday, _ = found.groups()
        if not (minute.isdigit() and hour.isdigit() and int(minute) < 60 and int(hour) < 24):
            raise ValueError("minutes and hours must be one time of day (the templates start one after another)")
        if (day == "?") == (weekday == "?"):
            raise ValueError("exactly one of day-of-month and day-of-week must be ? (e.g. cron(0 10 ? * TUE#2 *))")
        return v

    @field_validator("schedule_timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        if v not in available_timezones():
            raise ValueError(f"{v!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)")
        return v

    @model_validator(mode="after")
    def _same_day(self) -> FaultInjection:
        if self.schedule and self._start_minute(len(FIS_DRILLS) - 1) >= MINUTES_PER_DAY:
            raise _KeyError(
                "fis.schedule_interval_minutes",
                f"{len(FIS_DRILLS)} templates {self.schedule_interval_minutes} minutes apart from fis.schedule "
                f"({self.schedule}) run past midnight; start earlier or shorten the interval",
            )
        return self

    def _start_minute(self, index: int) -> int:
        found = SCHEDULER_CRON.match(self.schedule)
        assert found, "validated"
        minute, hour = int(found.group(1)), int(found.group(2))
        return hour * 60 + minute + index * self.schedule_interval_minutes

    def schedule_for(self, index: int) -> str:
        """The cron of the ``index``-th template: fis.schedule's day, ``index`` intervals later."""
        found = SCHEDULER_CRON.match(self.schedule)
        assert found, "validated"
        hour, minute = divmod(self._start_minute(index), 60)
        return f"cron({minute} {hour} {' '.join(found.groups()[2:])})"


class StackSettings(_Tier):
    stack: str
    region: str
    owner: str
    network: Network
    lb: LoadBalancer
    fleet: Fleet
    db: Database
    cache: Cache
    queue: Queue
    storage: Storage
    backup: Backup
    alarms: Alarms
    cluster: Cluster
    workload: Workload
    loadgen: LoadGenerators
    fis: FaultInjection

    @field_validator("stack")
    @classmethod
    def _stack_name(cls, v: str) -> str:
        if len(v) > STACK_NAME_MAX or not re.match(STACK_NAME_PATTERN, v):
            raise ValueError(
                f"stack name {v!r} cannot start AWS resource names: use at most {STACK_NAME_MAX} lowercase letters, "
                "digits and single hyphens, starting with a letter (e.g. `pulumi stack init staging-eu`)"
            )
        return v

    @property
    def is_production(self) -> bool:
        return self.stack in PRODUCTION_STACKS

    @property
    def tags(self) -> dict[str, str]:
        return {"Project": PROJECT, "Environment": self.stack, "Owner": self.owner, "ManagedBy": "pulumi"}

    @model_validator(mode="after")
    def _production_rules(self) -> StackSettings:
        if self.is_production:
            for key, on in (
                ("db.multi_az", self.db.multi_az),
                ("db.deletion_protection", self.db.deletion_protection),
                ("lb.deletion_protection", self.lb.deletion_protection),
            ):
                if not on:
                    raise _KeyError(key, f"must stay true in a stack named {self.stack}")
            if self.fis.schedule:
                raise _KeyError(
                    "fis.schedule",
                    f"must stay empty in a stack named {self.stack}: its drills are started by someone watching them "
                    "(`aws fis start-experiment --experiment-template-id ...`)",
                )
        return self

    @model_validator(mode="after")
    def _fis_rules(self) -> StackSettings:
        if self.fis.schedule and not self.fis.enabled:
            raise _KeyError("fis.schedule", "starts the FIS experiment templates: needs fis.enabled true")
        if self.fis.enabled and not self.db.multi_az:
            raise _KeyError(
                "fis.enabled",
                "the database-failover template reboots the database with forceFailover, which RDS refuses on a "
                "single-AZ instance: needs db.multi_az true",
            )
        return self

    @model_validator(mode="after")
    def _load_generators_need_the_cluster(self) -> StackSettings:
        if self.loadgen.enabled and not self.cluster.enabled:
            raise _KeyError("loadgen.enabled", "the load generators run on the EKS cluster: needs cluster.enabled true")
        return self

    @model_validator(mode="after")
    def _worker_outlasts_a_message(self) -> StackSettings:
        # A worker stopped mid-message must get to finish it before the queue hands the message to another.
        grace, visibility = self.workload.worker_termination_grace_s, self.queue.visibility_timeout_s
        if grace <= visibility:
            raise _KeyError(
                "workload.worker_termination_grace_s",
                f"({grace}) must exceed queue.visibility_timeout_s ({visibility}) so a worker can finish its message",
            )
        return self


class _KeyError(ValueError):
    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


@lru_cache(maxsize=1)
def schema() -> dict[str, dict[str, Any]]:
    """The ``config:`` block of Pulumi.yaml: every setting with its default."""
    return yaml.safe_load(PROJECT_FILE.read_text())["config"]


def stack_file(stack: str) -> Path:
    return STACKS_DIR / f"Pulumi.{stack}.yaml"


def _decode(value: Any) -> Any:
    """Pulumi hands typed values to programs as strings; arrays as JSON."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        tier, _, name = key.partition(".")
        if name:
            nested.setdefault(tier, {})[name] = value
        else:
            nested[tier] = value
    return nested


def _format(errors: list[ErrorDetails]) -> list[str]:
    lines = []
    for err in errors:
        loc = [str(p) for p in err["loc"]]
        ctx_err = err.get("ctx", {}).get("error")
        if isinstance(ctx_err, _KeyError):
            lines.append(str(ctx_err))
            continue
        key = ".".join(loc) if loc else "(stack)"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{key}: {msg}")
    return lines


def build(stack: str, config: dict[str, Any], region: str = "us-east-1") -> StackSettings:
    """Validate ``config`` (project keys without the ``pynomaly:`` prefix,
    defaults not yet applied) into settings for ``stack``."""
    where = stack_file(stack).relative_to(PROJECT_DIR)
    known = schema()
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise SettingsError(
            f"{where}: unknown setting(s) {', '.join(PROJECT + ':' + k for k in unknown)}; "
            f"the settings are listed with their defaults in Pulumi.yaml"
        )
    values = {k: spec.get("default") for k, spec in known.items()}
    values.update({k: _decode(v) for k, v in config.items()})
    data = _nest(values) | {"stack": stack, "region": region}
    try:
        return StackSettings.model_validate(data)
    except ValidationError as exc:
        problems = "\n  ".join(PROJECT + ":" + line for line in _format(exc.errors()))
        raise SettingsError(f"{where}: invalid configuration:\n  {problems}") from None


def split_namespaces(raw: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Pick this project's keys (without prefix) and the AWS region from a
    full ``namespace:key`` config map."""
    project = {k.split(":", 1)[1]: v for k, v in raw.items() if k.startswith(PROJECT + ":")}
    region = raw.get("aws:region") or "us-east-1"
    return project, region


def from_stack_file(stack: str, overrides: dict[str, Any] | None = None) -> StackSettings:
    """Settings of ``stack`` read straight from its stack file (offline tools)."""
    raw = read_stack_config(stack)
    raw.update(overrides or {})
    project, region = split_namespaces(raw)
    return build(stack, project, region)


def read_stack_config(stack: str) -> dict[str, Any]:
    path = stack_file(stack)
    if not path.exists():
        available = ", ".join(sorted(p.stem.removeprefix("Pulumi.") for p in STACKS_DIR.glob("Pulumi.*.yaml")))
        raise SettingsError(f"no stack file {path.relative_to(PROJECT_DIR)}; stacks: {available}")
    return dict((yaml.safe_load(path.read_text()) or {}).get("config") or {})
