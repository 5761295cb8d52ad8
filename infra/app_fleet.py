"""App fleet tier: the EC2 instances running the API, in an Auto Scaling group.

Sizes come from the numbers file (``scaling.instances_normal`` normally,
``scaling.instances_high_load`` as the ceiling, the 000 "High Load"
procedure); scaling tracks ``scaling.target_cpu_percent``. The user data
installs the CloudWatch agent, which publishes memory and disk (namespace
``CWAgent``) and scrapes the service's Prometheus ``/metrics`` into
``Pynomaly/App``, where the 003 application alarms watch them.

The AMI brings the service and its systemd units (deploy/ami/install.sh); the user data tells an instance
where the platform is: it writes /etc/pynomaly/pynomaly.env from the other tiers' outputs (no secret in it),
then starts the units. The DB password never passes through the user data: the units' credentials writer
fetches it from Secrets Manager with the instance role (deploy/systemd/pynomaly-db-credentials.service).
"""

from __future__ import annotations

import base64
import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra import pod_specs
from infra.instance_refresh import InstanceRefresh
from infra.queues import QUEUE_CLIENT_ACTIONS
from infra.service_env import Coordinates
from infra.tier import Tier, assume_role_policy, policy_document
from pynomaly_ops import metrics as metric_names
from pynomaly_ops import ports
from pynomaly_ops.baselines import Scaling
from pynomaly_ops.environment import ENV_NAMES
from pynomaly_ops.settings import Fleet as FleetSettings

AGENT_NAMESPACE = "CWAgent"
APP_NAMESPACE = "Pynomaly/App"
APP_DIMENSION = "Stack"  # the app metrics' one dimension: which stack's fleet
AGENT_DIR = "/opt/aws/amazon-cloudwatch-agent/etc"
# The service's Prometheus series the agent forwards; their names are
# defined once in service/metrics.py (the service contract). The alarm on
# mean inference time reads a histogram's _sum and _count series.
INFERENCE_SUM = f"{metric_names.INFERENCE_DURATION}_sum"
INFERENCE_COUNT = f"{metric_names.INFERENCE_DURATION}_count"
PROCESSING_LAG = metric_names.JOB_PROCESSING_LAG
AUTH_FAILURES = metric_names.AUTH_FAILURES
AUTH_REQUESTS = metric_names.AUTH_REQUESTS
APP_METRICS = (INFERENCE_SUM, INFERENCE_COUNT, PROCESSING_LAG, AUTH_FAILURES, AUTH_REQUESTS)

# The CloudWatch agent forwards counters, gauges and summaries but drops
# histogram families, and renaming series breaks its type lookup. So the
# agent scrapes this local proxy, which serves the app's /metrics with every
# histogram re-declared as a summary (its _sum and _count, buckets dropped).
# Python 3.9 standard library only (Amazon Linux 2023).
METRICS_PROXY_PORT = 9464
METRICS_PROXY = """\
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

UPSTREAM, PORT = sys.argv[1], int(sys.argv[2])


def retype(text):
    lines = text.splitlines()
    histograms = {l.split()[2] for l in lines if l.startswith("# TYPE ") and l.split()[3:] == ["histogram"]}
    out = []
    for line in lines:
        words = line.split()
        if line.startswith("# TYPE ") and words[2] in histograms:
            out.append("# TYPE %s summary" % words[2])
        elif not line.startswith("#") and line.split("{")[0].split(" ")[0] in {h + "_bucket" for h in histograms}:
            continue
        else:
            out.append(line)
    return "\\n".join(out) + "\\n"


class Proxy(BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            with urllib.request.urlopen(UPSTREAM, timeout=5) as response:
                body, status = retype(response.read().decode()).encode(), 200
        except OSError as exc:
            body, status = ("upstream %s: %s\\n" % (UPSTREAM, exc)).encode(), 503
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", PORT), Proxy).serve_forever()
"""
PROXY_PATH = "/opt/pynomaly/metrics-proxy.py"

# The units are the service's console scripts (the service contract); the AMI provides them (deploy/systemd).
# pynomaly-db-credentials (with its timer, every SECRET_REFRESH_S) writes the libpq service file and the Redis
# AUTH token into its runtime directory, as the pods' sidecar does; the service reads both on every new
# connection, so a rotated password or token reaches the instances without a restart.
SERVICE_UNITS = ("pynomaly-api.service", "pynomaly-worker.service")
DB_CREDENTIALS_UNITS = ("pynomaly-db-credentials.service", "pynomaly-db-credentials.timer")
SERVICE_USER = "pynomaly"  # created by deploy/ami/install.sh
CONFIG_DIR = "/etc/pynomaly"
ENV_FILE = f"{CONFIG_DIR}/pynomaly.env"  # the units' EnvironmentFile


def proxy_unit(app_port: int) -> str:
    return f"""[Unit]
Description=Pynomaly /metrics for the CloudWatch agent (histograms as summaries)
After=network-online.target

[Service]
ExecStart=/usr/bin/python3 {PROXY_PATH} http://127.0.0.1:{app_port}/metrics {METRICS_PROXY_PORT}
Restart=always
DynamicUser=yes

[Install]
WantedBy=multi-user.target
"""


@dataclass(frozen=True)
class AppFleetArgs:
    settings: FleetSettings
    scaling: Scaling
    app_subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    target_group_arn: pulumi.Input[str]
    region: str
    account_id: pulumi.Input[str]
    queue_arn: pulumi.Input[str]
    bucket_arns: Sequence[pulumi.Input[str]]
    db_secret_arn: pulumi.Input[str]
    db_resource_id: pulumi.Input[str]
    db_username: str
    redis_auth_secret_arn: pulumi.Input[str]
    kms_key_arns: Sequence[pulumi.Input[str]]
    logs_kms_key_arn: pulumi.Input[str]
    # Where the service's dependencies are, for its environment file (Redis over TLS: in-transit encryption is on).
    coordinates: Coordinates


@dataclass(frozen=True)
class Platform:
    """What the boot script needs from the other tiers, resolved: the service environment and the two secrets."""

    environment: dict[str, str]
    db_secret_arn: str
    redis_secret_arn: str


def agent_config(log_group: str) -> dict:
    """CloudWatch agent: memory and root-disk use per ASG, and the app's Prometheus metrics."""
    return {
        "agent": {"metrics_collection_interval": 60, "run_as_user": "cwagent"},
        "metrics": {
            "namespace": AGENT_NAMESPACE,
            "append_dimensions": {
                "AutoScalingGroupName": "${aws:AutoScalingGroupName}",
                "InstanceId": "${aws:InstanceId}",
            },
            # Alarms watch the ASG-wide series (dimension AutoScalingGroupName only).
            "aggregation_dimensions": [["AutoScalingGroupName"]],
            "metrics_collected": {
                "mem": {"measurement": ["mem_used_percent"]},
                "disk": {"measurement": ["used_percent"], "resources": ["/"], "drop_device": True},
            },
        },
        "logs": {
            "metrics_collected": {
                "prometheus": {
                    "log_group_name": log_group,
                    "prometheus_config_path": f"{AGENT_DIR}/prometheus.yaml",
                    "emf_processor": {
                        "metric_namespace": APP_NAMESPACE,
                        "metric_declaration": [
                            {
                                "source_labels": ["job"],
                                "label_matcher": "^pynomaly$",
                                "dimensions": [[APP_DIMENSION]],
                                "metric_selectors": [f"^{m}$" for m in APP_METRICS],
                            }
                        ],
                    },
                }
            }
        },
    }


def prometheus_config(stack: str) -> dict:
    return {
        "global": {"scrape_interval": "1m", "scrape_timeout": "10s"},
        "scrape_configs": [
            {
                "job_name": "pynomaly",
                "metrics_path": "/metrics",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{METRICS_PROXY_PORT}"], "labels": {APP_DIMENSION: stack}},
                    # The worker's own /metrics: the job processing lag is measured there (its histograms, which
                    # the agent drops, are not needed: the API's, through the proxy, carry inference time).
                    {"targets": [f"127.0.0.1:{ports.WORKER_METRICS}"], "labels": {APP_DIMENSION: stack}},
                ],
            }
        ],
    }


def instance_environment(p: Platform) -> dict[str, str]:
    """The units' environment: the stack's service environment (as the pods get it), plus the libpq service file
    and the Redis AUTH token file that pynomaly-db-credentials writes from their secrets (the pods' names and
    paths)."""
    written = [
        *pod_specs.pg_env(p.db_secret_arn),
        {"name": pod_specs.REDIS_SECRET_ENV, "value": p.redis_secret_arn},
        *pod_specs.redis_password_env(),
    ]
    return p.environment | {item["name"]: item["value"] for item in written}


def env_file_text(env: dict[str, str]) -> str:
    """``NAME=value`` lines, quoted the way both systemd's EnvironmentFile and a POSIX shell read them."""
    bad = sorted(name for name, value in env.items() if "\n" in value or "\r" in value or not value)
    if bad:
        raise ValueError(f"environment values must be one non-empty line: {', '.join(bad)}")
    return "".join(f"{name}={shlex.quote(value)}\n" for name, value in env.items())


def baked_ami_check() -> str:
    """Stop at once, saying why, on an AMI that deploy/ami/install.sh did not bake."""
    unit = f"/etc/systemd/system/{SERVICE_UNITS[0]}"
    return f"""if ! getent group {SERVICE_USER} >/dev/null || [ ! -f {unit} ]; then
  echo "user data: this AMI lacks the {SERVICE_USER} user or {unit}: bake it with deploy/ami/install.sh" >&2
  exit 1
fi
"""


def env_script(env: dict[str, str]) -> str:
    """Write the environment file (root:pynomaly 0640, replaced atomically), the instance id appended at boot."""
    tmp = f"{ENV_FILE}.new"
    imds = "http://169.254.169.254/latest"
    return f"""imds_token=$(curl -sSf --retry 5 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' {imds}/api/token)
instance_id=$(curl -sSf --retry 5 -H "X-aws-ec2-metadata-token: $imds_token" {imds}/meta-data/instance-id)
install -m 0640 -o root -g {SERVICE_USER} /dev/null {tmp}
cat >> {tmp} <<'ENV'
{env_file_text(env)}ENV
echo "{ENV_NAMES["instance_id"]}=$instance_id" >> {tmp}
mv -f {tmp} {ENV_FILE}
"""


def start_script() -> str:
    """First the DB credentials (a failure stops the boot script, with the reason in its journal), then the rest."""
    credentials, timer = DB_CREDENTIALS_UNITS
    return f"""systemctl start {credentials} || {{ journalctl -u {credentials} --no-pager -n 20 >&2; exit 1; }}
systemctl start {timer} {" ".join(SERVICE_UNITS)}
"""


def user_data(stack: str, app_port: int, log_group: str, region: str, platform: Platform) -> str:
    """Boot script (Amazon Linux 2023): the service's environment, the credentials and the service, the metrics
    proxy, then the CloudWatch agent."""
    service = baked_ami_check() + env_script(instance_environment(platform)) + start_script()
    script = f"""#!/bin/bash
set -euo pipefail
{service}mkdir -p {PROXY_PATH.rsplit("/", 1)[0]}
cat > {PROXY_PATH} <<'PROXY'
{METRICS_PROXY}PROXY
cat > /etc/systemd/system/pynomaly-metrics-proxy.service <<'UNIT'
{proxy_unit(app_port)}UNIT
systemctl daemon-reload
systemctl enable --now pynomaly-metrics-proxy.service
dnf install -y amazon-cloudwatch-agent
cat > {AGENT_DIR}/prometheus.yaml <<'PROMETHEUS'
{json.dumps(prometheus_config(stack), indent=2)}
PROMETHEUS
cat > {AGENT_DIR}/amazon-cloudwatch-agent.json <<'AGENT'
{json.dumps(agent_config(log_group), indent=2)}
AGENT
/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 \\
  -c file:{AGENT_DIR}/amazon-cloudwatch-agent.json -s
"""
    return base64.b64encode(script.encode()).decode()


REFRESH_TIMEOUT_BASE_S = 900  # pulumi up waits this long, plus two warm-ups per instance, for the outcome
# The group's own CloudWatch metrics (capacity and instances by state), for the dashboard and the runbooks.
GROUP_METRICS = [
    aws.autoscaling.Metric.GROUP_IN_SERVICE_INSTANCES,
    aws.autoscaling.Metric.GROUP_DESIRED_CAPACITY,
    aws.autoscaling.Metric.GROUP_PENDING_INSTANCES,
    aws.autoscaling.Metric.GROUP_TERMINATING_INSTANCES,
    aws.autoscaling.Metric.GROUP_MIN_SIZE,
    aws.autoscaling.Metric.GROUP_MAX_SIZE,
]


class AppFleet(Tier):
    TIER = "fleet"

    asg_name: pulumi.Output[str]
    role_name: pulumi.Output[str | None]  # the instance role's

    def __init__(
        self, stack: str, tags: dict[str, str], args: AppFleetArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__(stack, tags, opts)
        s = args.settings
        groups = {
            role: aws.cloudwatch.LogGroup(
                self.name_of(f"{role}-logs"),
                name=f"/pynomaly/{stack}/{role}",
                retention_in_days=30,
                kms_key_id=args.logs_kms_key_arn,
                tags=self.tagged(f"{role}-logs"),
                opts=self.child,
            )
            for role in ("app", "prometheus")
        }
        profile = self._instance_profile(args, [g.arn for g in groups.values()])
        template = aws.ec2.LaunchTemplate(
            self.name_of("lt"),
            name=self.name_of("lt"),
            image_id=s.ami_id,
            instance_type=s.instance_type,
            iam_instance_profile={"arn": profile.arn},
            vpc_security_group_ids=[args.security_group_id],
            metadata_options={
                "http_endpoint": "enabled",
                "http_tokens": "required",  # IMDSv2 only
                "http_put_response_hop_limit": 1,  # containers on the host cannot reach IMDS
                "instance_metadata_tags": "enabled",
            },
            block_device_mappings=[
                {
                    "device_name": "/dev/xvda",
                    "ebs": {
                        "volume_size": s.root_volume_gb,
                        "volume_type": "gp3",
                        "encrypted": "true",
                        "delete_on_termination": "true",
                    },
                }
            ],
            monitoring={"enabled": True},
            user_data=self._platform(args, s.app_port).apply(
                lambda platform: user_data(stack, s.app_port, f"/pynomaly/{stack}/prometheus", args.region, platform)
            ),
            update_default_version=True,
            tag_specifications=[
                {"resource_type": kind, "tags": self.tagged("instance")} for kind in ("instance", "volume")
            ],
            tags=self.tagged("lt"),
            opts=pulumi.ResourceOptions.merge(self.child, pulumi.ResourceOptions(depends_on=list(groups.values()))),
        )
        group = aws.autoscaling.Group(
            self.name_of("asg"),
            name=self.name_of("asg"),
            min_size=args.scaling.instances_normal,
            desired_capacity=args.scaling.instances_normal,
            max_size=args.scaling.instances_high_load,
            vpc_zone_identifiers=args.app_subnet_ids,
            target_group_arns=[args.target_group_arn],
            health_check_type="ELB",
            health_check_grace_period=s.health_check_grace_s,
            default_instance_warmup=s.health_check_grace_s,
            # The version at creation only: later versions arrive through the refresh below, which can roll back.
            launch_template={"id": template.id, "version": template.latest_version.apply(str)},
            enabled_metrics=GROUP_METRICS,
            tags=[{"key": k, "value": v, "propagate_at_launch": True} for k, v in self.tagged("instance").items()],
            # The desired capacity is only the starting size: target tracking and the 000 high-load procedure
            # (`set-desired-capacity ... 6`) change it, and a later `pulumi up` must not terminate those instances.
            # The launch template is moved by the refresh (AWS sets it when the refresh succeeds), never by Pulumi.
            opts=pulumi.ResourceOptions.merge(
                self.child, pulumi.ResourceOptions(ignore_changes=["desired_capacity", "launch_template"])
            ),
        )
        InstanceRefresh(
            self.name_of("refresh"),
            group=group.name,
            template_id=template.id,
            version=template.latest_version.apply(str),
            region=args.region,
            warmup_s=s.health_check_grace_s,
            # Every replacement is launched at once (max 200 %); room for slow boots and the rollback after.
            timeout_s=REFRESH_TIMEOUT_BASE_S + 2 * s.health_check_grace_s * args.scaling.instances_high_load,
            opts=pulumi.ResourceOptions.merge(self.child, pulumi.ResourceOptions(depends_on=[group])),
        )
        aws.autoscaling.Policy(
            self.name_of("cpu-target"),
            name=self.name_of("cpu-target"),
            autoscaling_group_name=group.name,
            policy_type="TargetTrackingScaling",
            target_tracking_configuration={
                "predefined_metric_specification": {"predefined_metric_type": "ASGAverageCPUUtilization"},
                "target_value": args.scaling.target_cpu_percent,
            },
            opts=self.child,
        )
        self.asg_name = group.name
        self.role_name = profile.role
        self.register_outputs({"asg_name": self.asg_name, "role_name": self.role_name})

    @staticmethod
    def _platform(args: AppFleetArgs, app_port: int) -> pulumi.Output[Platform]:
        return pulumi.Output.all(
            environment=args.coordinates.environment(app_port=app_port, region=args.region),
            db_secret_arn=args.db_secret_arn,
            redis_secret_arn=args.redis_auth_secret_arn,
        ).apply(lambda v: Platform(**v))

    def _instance_profile(
        self, args: AppFleetArgs, log_group_arns: list[pulumi.Output[str]]
    ) -> aws.iam.InstanceProfile:
        """Role with exactly what the service needs on this stack's resources."""
        role = aws.iam.Role(
            self.name_of("role"),
            name=self.name_of("role"),
            assume_role_policy=assume_role_policy("ec2.amazonaws.com"),
            tags=self.tagged("role"),
            opts=self.child,
        )
        # Session Manager instead of SSH: no inbound port, every session logged.
        aws.iam.RolePolicyAttachment(
            self.name_of("role-ssm"),
            role=role.name,
            policy_arn="arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
            opts=self.child,
        )
        aws.iam.RolePolicy(
            self.name_of("role-policy"),
            role=role.id,
            policy=policy_document(*app_statements(args, log_group_arns)),
            opts=self.child,
        )
        profile = aws.iam.InstanceProfile(
            self.name_of("profile"),
            name=self.name_of("profile"),
            role=role.name,
            tags=self.tagged("profile"),
            opts=self.child,
        )
        return profile


def app_statements(args: AppFleetArgs, log_group_arns: list[pulumi.Output[str]]) -> list[dict]:
    db_user = pulumi.Output.concat(
        "arn:aws:rds-db:", args.region, ":", args.account_id, ":dbuser:", args.db_resource_id, "/", args.db_username
    )
    objects = [pulumi.Output.concat(arn, "/*") for arn in args.bucket_arns]
    return [
        {
            "Sid": "JobQueue",
            "Effect": "Allow",
            "Resource": args.queue_arn,
            "Action": QUEUE_CLIENT_ACTIONS,
        },
        {
            "Sid": "BucketsList",
            "Effect": "Allow",
            "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
            "Resource": args.bucket_arns,
        },
        {"Sid": "BucketsObjects", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": objects},
        {
            "Sid": "DatabaseSecret",
            "Effect": "Allow",
            "Action": ["secretsmanager:GetSecretValue"],
            "Resource": args.db_secret_arn,
        },
        {
            "Sid": "RedisAuthSecret",
            "Effect": "Allow",
            "Action": ["secretsmanager:GetSecretValue"],
            "Resource": args.redis_auth_secret_arn,
        },
        {"Sid": "DatabaseIamAuth", "Effect": "Allow", "Action": ["rds-db:connect"], "Resource": db_user},
        {
            "Sid": "DataKeys",
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": args.kms_key_arns,
        },
        {
            "Sid": "Logs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            "Resource": [x for arn in log_group_arns for x in (arn, pulumi.Output.concat(arn, ":*"))],
        },
        # PutMetricData and DescribeTags support no resource ARNs; the
        # namespace condition confines metrics to the agent's and the app's.
        {
            "Sid": "Metrics",
            "Effect": "Allow",
            "Action": ["cloudwatch:PutMetricData"],
            "Resource": "*",
            "Condition": {"StringEquals": {"cloudwatch:namespace": [AGENT_NAMESPACE, APP_NAMESPACE]}},
        },
        {"Sid": "AgentDimensions", "Effect": "Allow", "Action": ["ec2:DescribeTags"], "Resource": "*"},
    ]
