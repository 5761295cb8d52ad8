"""The stack outputs: one shape for every target.

``pulumi stack output --json`` of an AWS stack and ``pynomaly-ops local
outputs --json`` print these keys; drills and load tests read them through
:class:`StackOutputs` and never care which target they face. The Pulumi
program exports exactly these names (infra/__main__.py uses the constants).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict

# Keys every target has.
LOAD_BALANCER_URL = "load_balancer_url"
DB_WRITER_ENDPOINT = "db_writer_endpoint"
DB_READER_ENDPOINT = "db_reader_endpoint"
DB_SECRET_ARN = "db_secret_arn"
REDIS_AUTH_SECRET_ARN = "redis_auth_secret_arn"  # AWS: the Secrets Manager secret holding the Redis AUTH token
REDIS_PRIMARY_ENDPOINT = "redis_primary_endpoint"
REDIS_READER_ENDPOINT = "redis_reader_endpoint"
QUEUE_URL = "queue_url"
DEAD_LETTER_QUEUE_URL = "dead_letter_queue_url"
ARTIFACTS_BUCKET = "artifacts_bucket"
BACKUPS_BUCKET = "backups_bucket"
ASG_NAME = "asg_name"
AVAILABILITY_ZONES = "availability_zones"  # the stack's three AZ names in this account, in zone order
AVAILABILITY_ZONE_IDS = "availability_zone_ids"  # the same zones by ID (the same in every account)
ALARM_TOPIC_ARNS = "alarm_topic_arns"  # {"warning": arn, "critical": arn}
ALARMS = "alarms"  # {catalogue key: {target: alarm name}}, pynomaly_ops/alarms.py

# Keys only some targets have.
CLUSTER_NAME = "cluster_name"  # EKS, when the stack declares it
WORKLOAD_NAMESPACE = "workload_namespace"
LOAD_GENERATORS_NAMESPACE = "load_generators_namespace"  # EKS, with loadgen.enabled: the Locust master and workers
FIS_EXPERIMENT_TEMPLATES = "fis_experiment_templates"  # AWS with fis.enabled: {drill name: FIS experiment template id}
DB_WRITER_DSN = "db_writer_dsn"  # local only: a libpq connection string
API_KEY = "api_key"  # local only: generated at `local up`
AWS_ENDPOINT_URL = "aws_endpoint_url"  # local only: the SQS/S3 stand-in
PROMETHEUS_URL = "prometheus_url"  # local only


class StackOutputs(BaseModel):
    """What drills and load tests need to reach a target."""

    model_config = ConfigDict(extra="allow", frozen=True)

    load_balancer_url: str
    db_writer_endpoint: str
    db_reader_endpoint: str
    redis_primary_endpoint: str
    redis_reader_endpoint: str
    queue_url: str
    dead_letter_queue_url: str
    artifacts_bucket: str
    backups_bucket: str
    db_secret_arn: str | None = None
    redis_auth_secret_arn: str | None = None
    asg_name: str | None = None
    alarm_topic_arns: dict[str, str] = {}
    alarms: dict[str, dict[str, str]] = {}
    cluster_name: str | None = None
    workload_namespace: str | None = None
    load_generators_namespace: str | None = None
    fis_experiment_templates: dict[str, str] = {}
    db_writer_dsn: str | None = None
    api_key: str | None = None
    aws_endpoint_url: str | None = None
    prometheus_url: str | None = None

    def alarm_name(self, key: str) -> str:
        """This target's name of the catalogue alarm ``key`` (e.g. ``error_rate.critical``)."""
        try:
            names = self.alarms[key]
        except KeyError:
            raise KeyError(f"this target has no alarm {key!r}; it has: {', '.join(sorted(self.alarms))}") from None
        return next(iter(names.values()))

    @classmethod
    def from_json_file(cls, path: Path | str) -> StackOutputs:
        return cls.model_validate(json.loads(Path(path).read_text()))


# Keys the AWS fault library (aws_target/) reads besides the above; the Pulumi program exports them.
REGION = "region"  # the stack's AWS region
DB_PRIMARY_IDENTIFIER = "db_primary_identifier"  # the RDS instance a forced failover reboots
REDIS_REPLICATION_GROUP_ID = "redis_replication_group_id"  # the ElastiCache group a test failover acts on
HTTPS_LISTENER_ARN = "https_listener_arn"  # the ALB listener whose default action maintenance mode switches
