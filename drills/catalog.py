"""The drills: each named after the runbook procedure it rehearses, with its objectives from baselines.yaml.

An objective compares one measured figure (drills/measures.py) with a number of the file, named by its
key; nothing here types a runbook number.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pynomaly_ops.alarms import STRUCTURAL
from pynomaly_ops.baselines import Baselines, PerTarget

LOCAL, AWS = "local", "aws"  # drills/targets.py's names
BOTH = (LOCAL, AWS)

EXPERIMENTS = Path(__file__).resolve().parent / "experiments"


@dataclass(frozen=True)
class Objective:
    what: str
    measured: str  # a key of the measurements
    comparison: Literal["<=", "=="]
    limit: Callable[[Baselines], float | PerTarget]
    source: str  # the numbers-file key the limit comes from

    def limit_for(self, b: Baselines, target: str = LOCAL) -> float:
        limit = self.limit(b)
        return float(getattr(limit, target)) if isinstance(limit, PerTarget) else limit

    def source_for(self, b: Baselines, target: str = LOCAL) -> str:
        return f"{self.source}.{target}" if isinstance(self.limit(b), PerTarget) else self.source

    def check(self, b: Baselines, measurements: dict[str, Any], target: str = LOCAL) -> dict[str, Any]:
        limit, value = self.limit_for(b, target), measurements.get(self.measured)
        met = value is not None and (value <= limit if self.comparison == "<=" else value == limit)
        return {"objective": self.what, "measured": value, "limit": f"{self.comparison} {limit:g}",
                "source": self.source_for(b, target), "met": met}  # fmt: skip


@dataclass(frozen=True)
class Drill:
    name: str
    procedure: str  # the runbook procedure it rehearses
    fault: str  # the cause, as the incident report states it
    objectives: tuple[Objective, ...]
    targets: tuple[str, ...] = (LOCAL,)
    needs_zones: bool = False  # the zones in network namespaces of `local up --zones` (root)
    needs_outputs: tuple[str, ...] = ()  # stack outputs the drill needs (EKS's cluster_name)

    @property
    def experiment(self) -> Path:
        return EXPERIMENTS / f"{self.name}.json"

    def verdict(self, b: Baselines, measurements: dict[str, Any], target: str = LOCAL) -> list[dict[str, Any]]:
        return [o.check(b, measurements, target) for o in self.objectives]

    def unfit_for(self, target: str, outputs: dict[str, Any]) -> str | None:
        """Why the drill cannot run on ``target`` with these outputs (None: it can)."""
        if target not in self.targets:
            return f"no {target} implementation (its targets: {', '.join(self.targets)})"
        if missing := [k for k in self.needs_outputs if not outputs.get(k)]:
            return f"the stack has no {', '.join(missing)} (the drill needs EKS: cluster.enabled)"
        return None


def _error_rate(level_of: Callable[[Baselines], str], source: str) -> Objective:
    return Objective(
        "error rate users saw (%)",
        "error_rate_percent",
        "<=",
        lambda b: b.error_rate_percent(level_of(b)),  # type: ignore[arg-type]
        source,
    )


DRILLS: tuple[Drill, ...] = (
    Drill(
        "instance-loss",
        "000 Emergency Procedures (System Down); 002 Training and Drills (failure injection)",
        "one of the three API instances killed (SIGKILL)",
        (
            _error_rate(lambda b: b.recovery.instance_loss.max_error_rate, "recovery.instance_loss.max_error_rate"),
            Objective(
                "capacity back to the normal count (s)",
                "capacity restored (s)",
                "<=",
                lambda b: b.recovery.instance_loss.capacity_back_s,
                "recovery.instance_loss.capacity_back_s",
            ),
        ),
    ),
    Drill(
        "database-failover",
        "000 Emergency Procedures (Database Issues); 001 Disaster Recovery (RDS Multi-AZ failover)",
        "the PostgreSQL primary lost (SIGKILL of Patroni and its postmaster)",
        (
            Objective(
                "write RTO: first failed to first acknowledged write (s)",
                "write_outage_s",
                "<=",
                lambda b: b.recovery.database_failover.rto_s,
                "recovery.database_failover.rto_s",
            ),
            Objective(
                "RPO: acknowledged writes lost",
                "writes_lost",
                "==",
                lambda b: b.recovery.database_failover.acknowledged_writes_lost,
                "recovery.database_failover.acknowledged_writes_lost",
            ),
            Objective(
                "old primary back as synchronous standby (s)",
                "old primary rejoined (s)",
                "<=",
                lambda b: b.recovery.database_failover.rto_s,
                "recovery.database_failover.rto_s",
            ),
        ),
    ),
    Drill(
        "cache-failover",
        "000 Key System Components (ElastiCache Redis); 002 Training and Drills (failure injection)",
        "the Redis primary stopped answering (SIGSTOP), as a lost cache node",
        (
            Objective(
                "Sentinel promotes a replica (s)",
                "new cache primary (s)",
                "<=",
                lambda b: b.recovery.cache_failover.rto_s,
                "recovery.cache_failover.rto_s",
            ),
            _error_rate(lambda b: b.recovery.cache_failover.max_error_rate, "recovery.cache_failover.max_error_rate"),
        ),
    ),
    Drill(
        "cache-flush",
        "001 Troubleshooting (Clear Redis cache: redis-cli FLUSHALL)",
        "the result cache flushed (FLUSHALL on the primary)",
        (
            _error_rate(lambda b: b.recovery.cache_flush.max_error_rate, "recovery.cache_flush.max_error_rate"),
            Objective(
                "p95 back under the warning level (s)",
                "p95_back_s",
                "<=",
                lambda b: b.recovery.cache_flush.p95_back_s,
                "recovery.cache_flush.p95_back_s",
            ),
        ),
    ),
    Drill(
        "traffic-spike",
        "000 Emergency Procedures (High Load: scale 3 to 6); 000 Traffic Patterns (peak 3x)",
        "load raised to the peak multiple of normal, then the high-load procedure",
        (
            Objective(
                "p95 back under the warning level after the fault (s)",
                "p95_back_s",
                "<=",
                lambda b: b.recovery.traffic_spike.p95_back_s,
                "recovery.traffic_spike.p95_back_s",
            ),
            _error_rate(lambda b: "warning", "thresholds.error_rate_percent.warning"),
        ),
    ),
    Drill(
        "bad-deploy-rollback",
        "001 Rollback Procedures; 003 Emergency Rollback",
        "a release with an invalid configuration rolled out to one instance (it cannot start)",
        (
            _error_rate(lambda b: b.recovery.bad_deploy.max_error_rate, "recovery.bad_deploy.max_error_rate"),
            Objective(
                "previous release serving again after the rollback (s)",
                "previous release serving (s)",
                "<=",
                lambda b: b.recovery.bad_deploy.rollback_s,
                "recovery.bad_deploy.rollback_s",
            ),
        ),
    ),
    Drill(
        "queue-consumer-outage",
        "000 Key System Components (Message Queue (AWS SQS)); 004 Pipeline Failure Recovery; 003 Application Metrics",
        "every queue consumer (worker) stopped while jobs kept arriving, with one poison message among them",
        (
            Objective(
                "jobs not completed exactly once",
                "jobs not completed exactly once",
                "==",
                lambda b: 0,
                STRUCTURAL + "every submitted job completed, and run once",
            ),
            Objective(
                "backlog drained after the workers came back (s)",
                "backlog drained (s)",
                "<=",
                lambda b: b.queue_backlog_drain_s,
                "recovery.queue_backlog.drain_within",
            ),
            Objective(
                "poison message in the dead-letter queue after the workers came back (s)",
                "poison message dead-lettered (s)",
                "<=",
                lambda b: b.queue_backlog_drain_s,
                "recovery.queue_backlog.drain_within",
            ),
            Objective(
                "dead-letter alarm fired",
                "dead-letter alarm fired",
                "==",
                lambda b: 1,
                STRUCTURAL + "the catalogue's dlq_not_empty, on any dead letter",
            ),
            _error_rate(lambda b: "warning", "thresholds.error_rate_percent.warning"),
        ),
    ),
    Drill(
        "maintenance-mode",
        "002 Containment (Redirect traffic to maintenance page)",
        "the load balancer switched to the maintenance page (a planned state, not a failure)",
        (
            Objective(
                "maintenance page served after the switch (s)",
                "maintenance page served (s)",
                "<=",
                lambda b: b.recovery.maintenance.switch_s,
                "recovery.maintenance.switch_s",
            ),
            Objective(
                "P0 service-down alarms raised for a planned maintenance",
                "p0_alarms_raised",
                "==",
                lambda b: 0,
                STRUCTURAL + "no P0 page for a planned state (the catalogue's SERVICE_DOWN)",
            ),
            Objective(
                "normal service back after switching off (s)",
                "normal service back (s)",
                "<=",
                lambda b: b.recovery.maintenance.switch_s,
                "recovery.maintenance.switch_s",
            ),
        ),
    ),
)
RECOVERY_DRILLS: tuple[Drill, ...] = (
    Drill(
        "backup-verification",
        "004 Database Backup Verification; 001 Backup and Recovery; 000 Backup & Recovery",
        "none: the daily procedure (a backup taken, then restored into a scratch database and compared)",
        (
            Objective(
                "RPO: the newest backup's age when verified (s)",
                "backup age (s)",
                "<=",
                lambda b: b.recovery.backups.max_age_s,
                "recovery.backups.max_age_s",
            ),
            Objective(
                "restore RTO: download to a readable, verified database (s)",
                "backup restored and verified (s)",
                "<=",
                lambda b: b.recovery.backups.restore_rto_s,
                "recovery.backups.restore_rto_s",
            ),
            Objective(
                "rows missing or extra after the restore",
                "rows missing or extra",
                "==",
                lambda b: b.recovery.backups.rows_differing,
                "recovery.backups.rows_differing",
            ),
            Objective(
                "tables whose content differs from the backup's",
                "tables differing",
                "==",
                lambda b: b.recovery.backups.rows_differing,
                "recovery.backups.rows_differing",
            ),
            _error_rate(lambda b: "warning", "thresholds.error_rate_percent.warning"),
        ),
    ),
    Drill(
        "object-restore",
        "001 Backup and Recovery, Data Corruption (artifacts bucket); 000 Backup & Recovery",
        "objects in the versioned artifacts bucket deleted and overwritten",
        (
            Objective(
                "RPO: objects differing from their last good version",
                "objects differing from their last good version",
                "==",
                lambda b: b.recovery.object_restore.objects_differing,
                "recovery.object_restore.objects_differing",
            ),
            Objective(
                "objects without a good version to restore",
                "objects without a good version",
                "==",
                lambda b: b.recovery.object_restore.objects_differing,
                "recovery.object_restore.objects_differing",
            ),
            Objective(
                "restore RTO: every object back from its history (s)",
                "objects restored (s)",
                "<=",
                lambda b: b.recovery.object_restore.rto_s,
                "recovery.object_restore.rto_s",
            ),
            _error_rate(lambda b: "warning", "thresholds.error_rate_percent.warning"),
        ),
    ),
    Drill(
        "point-in-time-recovery",
        "001 Backup and Recovery, Data Corruption; 000 Backup & Recovery",
        "a DELETE of every row of a table (the drill's own), to be undone by recovering to the moment before",
        (
            Objective(
                "RPO: T's WAL in the archive after (s)",
                "RPO: T's WAL archived after (s)",
                "<=",
                lambda b: b.recovery.point_in_time.rpo_s.local,
                "recovery.point_in_time.rpo_s.local",
            ),
            Objective(
                "restore RTO: base backup and WAL to a readable database at T (s)",
                "recovered to the target (s)",
                "<=",
                lambda b: b.recovery.point_in_time.restore_rto_s,
                "recovery.point_in_time.restore_rto_s",
            ),
            Objective(
                "rows written before T missing or altered",
                "rows written before T missing",
                "==",
                lambda b: b.recovery.point_in_time.rows_differing,
                "recovery.point_in_time.rows_differing",
            ),
            Objective(
                "rows written after T present",
                "rows written after T present",
                "==",
                lambda b: b.recovery.point_in_time.rows_differing,
                "recovery.point_in_time.rows_differing",
            ),
            _error_rate(lambda b: "warning", "thresholds.error_rate_percent.warning"),
        ),
    ),
)
RECOVERY_DRILLS += (
    Drill(
        "disaster-recovery",
        "001 Disaster Recovery; 004 Disaster Recovery Procedure; 000 Backup & Recovery",
        "the whole stack lost at once: every process SIGKILLed, its state and database directories deleted"
        " (the off-site copy of the backups and the backup key survive)",
        (
            Objective(
                "RTO: disaster to a rebuilt service that passes its smoke test (s)",
                "service rebuilt from backups (s)",
                "<=",
                lambda b: b.recovery.disaster.rto_s,
                "recovery.disaster.rto_s",
            ),
            Objective(
                "RPO: span of acknowledged writes lost (s)",
                "writes_lost_window_s",
                "<=",
                lambda b: b.recovery.point_in_time.rpo_s.local,
                "recovery.point_in_time.rpo_s.local",
            ),
            Objective(
                "rows in the backup missing after the rebuild",
                "rows in the backup missing",
                "==",
                lambda b: b.recovery.point_in_time.rows_differing,
                "recovery.point_in_time.rows_differing",
            ),
            Objective(
                "smoke tests failed on the rebuilt stack",
                "smoke tests failed",
                "==",
                lambda b: 0,
                STRUCTURAL + "the rebuilt service answers /health and finds the smoke test's outlier",
            ),
        ),
    ),
    Drill(
        "config-backup",
        "001 Backup and Recovery (configuration and secrets); 000 Backup & Recovery",
        "none: the procedure (the stack's configuration exported encrypted, fetched back, decrypted, compared)",
        (
            Objective(
                "configuration files differing from the live ones after a restore",
                "config files differing",
                "==",
                lambda b: b.recovery.config_backup.files_differing,
                "recovery.config_backup.files_differing",
            ),
            _error_rate(lambda b: "warning", "thresholds.error_rate_percent.warning"),
        ),
    ),
)
DRILLS += RECOVERY_DRILLS


def _az_outage(*extra: Objective) -> tuple[Objective, ...]:
    """What an AZ lost and back must meet: the database's RTO and RPO on the loss, then no second outage, no
    leader change and the zone whole again within the deadline when it comes back."""
    rto, rpo = "recovery.database_failover.rto_s", "recovery.database_failover.acknowledged_writes_lost"
    az = "recovery.az_outage."
    return (
        Objective(
            "write RTO on the zone's loss (s)",
            "write_outage_s",
            "<=",
            lambda b: b.recovery.database_failover.rto_s,
            rto,
        ),
        Objective(
            "RPO: acknowledged writes lost",
            "writes_lost",
            "==",
            lambda b: b.recovery.database_failover.acknowledged_writes_lost,
            rpo,
        ),
        *extra,
        Objective(
            "write outage after the zone came back (s)",
            "write outage after the zone came back (s)",
            "<=",
            lambda b: b.recovery.az_outage.second_outage_s,
            az + "second_outage_s",
        ),
        Objective(
            "database leader changes after the zone came back",
            "leader changes on heal",
            "<=",
            lambda b: b.recovery.az_outage.leader_changes_on_heal,
            az + "leader_changes_on_heal",
        ),
        Objective(
            "zone whole again: its members replicas, every instance in service (s)",
            "zone rejoined (s)",
            "<=",
            lambda b: b.recovery.az_outage.rejoin_s,
            az + "rejoin_s",
        ),
    )


AZ_DRILLS: tuple[Drill, ...] = (
    Drill(
        "az-partition",
        "000 Emergency Procedures (Database Issues); 003 System Architecture (RDS PostgreSQL Multi-AZ)",
        "the database primary's availability zone cut off the network (its link down, its processes running)",
        _az_outage(
            Objective(
                "split-brain writes acknowledged by the cut-off old primary",
                "split-brain writes acknowledged",
                "==",
                lambda b: b.recovery.az_outage.split_brain_writes,
                "recovery.az_outage.split_brain_writes",
            ),
            Objective(
                "split-brain writes surviving on the cluster after the heal",
                "split-brain writes surviving",
                "==",
                lambda b: b.recovery.az_outage.split_brain_writes,
                "recovery.az_outage.split_brain_writes",
            ),
        ),
        needs_zones=True,
    ),
    Drill(
        "az-power-loss",
        "000 Emergency Procedures (System Down, Database Issues); 003 System Architecture (Multi-AZ)",
        "power lost in the database primary's availability zone (every process in it SIGKILLed, its link down)",
        _az_outage(),
        needs_zones=True,
    ),
)
EKS_DRILLS: tuple[Drill, ...] = (
    Drill(
        "pod-loss",
        "001 Auto-scaling Configuration (HPA minimum, PDB); 002 Training and Drills (failure injection)",
        "API pods of the active colour deleted (as a node's kubelet or an operator would lose them)",
        (
            _error_rate(lambda b: b.recovery.pod_loss.max_error_rate, "recovery.pod_loss.max_error_rate"),
            Objective(
                "the Deployment's pods ready again, replacements included (s)",
                "api pods ready (s)",
                "<=",
                lambda b: b.recovery.pod_loss.pods_back_s,
                "recovery.pod_loss.pods_back_s",
            ),
        ),
        targets=(AWS,),
        needs_outputs=("cluster_name",),
    ),
    Drill(
        "node-drain",
        "001 Auto-scaling Configuration (pods reschedule); 002 Training and Drills (failure injection)",
        "one node of the managed node group cordoned and drained through the Eviction API",
        (
            _error_rate(lambda b: b.recovery.node_drain.max_error_rate, "recovery.node_drain.max_error_rate"),
            Objective(
                "the drained node's API pods rescheduled and ready (s)",
                "node drained (s)",
                "<=",
                lambda b: b.recovery.node_drain.rescheduled_s,
                "recovery.node_drain.rescheduled_s",
            ),
        ),
        targets=(AWS,),
        needs_outputs=("cluster_name",),
    ),
)
# The drills with an AWS implementation too (aws_target/): what the AWS APIs can break and observe.
ON_AWS_TOO = ("instance-loss", "database-failover", "cache-failover", "traffic-spike", "queue-consumer-outage",
              "maintenance-mode", "object-restore")  # fmt: skip
DRILLS = tuple(replace(d, targets=BOTH) if d.name in ON_AWS_TOO else d for d in (*DRILLS, *AZ_DRILLS, *EKS_DRILLS))
BY_NAME = {d.name: d for d in DRILLS}


class UnknownDrill(KeyError):
    pass


def get(name: str) -> Drill:
    try:
        return BY_NAME[name]
    except KeyError:
        raise UnknownDrill(f"unknown drill {name!r}; the drills: {', '.join(BY_NAME)}") from None
