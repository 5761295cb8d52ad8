"""A stack in moto (in-process) named as the Pulumi program names its resources, its outputs document, and the
runner's IAM policy as the AWS fault library's calls need it."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import boto3
from moto.ec2.models.amis import AMIS

from pynomaly_ops import REPO_ROOT, object_versions
from pynomaly_ops import outputs as keys
from pynomaly_ops.alarms import SERVICE_DOWN_KEY, Target, catalogue, names_by_key
from pynomaly_ops.baselines import SEVERITIES, load
from pynomaly_ops.naming import queue_names, resource_name
from pynomaly_ops.outputs import StackOutputs

REGION = "eu-west-1"  # not the environment's default region: the outputs' region must win
STACK = "drill"
ACCOUNT = "123456789012"  # moto's
POLICY_FILE = REPO_ROOT / "docs" / "aws-drill-permissions.json"
STACK_PLACEHOLDER = "STACK_NAME"
LOCAL_ONLY = {keys.DB_WRITER_DSN, keys.API_KEY, keys.AWS_ENDPOINT_URL, keys.PROMETHEUS_URL}


ENVIRONMENT_REGION = "us-east-1"  # boto3's default here; the stack is in REGION


def isolated_credentials(monkeypatch: Any, tmp_path: Path) -> None:
    """moto's fake credentials, and nothing of a developer's AWS configuration or named stack."""
    for var in ("AWS_PROFILE", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "PYNOMALY_AWS_OUTPUTS",
                "PYNOMALY_AWS_STACK"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", ENVIRONMENT_REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)


def output_keys() -> set[str]:
    """Every key pynomaly_ops/outputs.py names."""
    return {v for k, v in vars(keys).items() if k.isupper() and isinstance(v, str)}


def client(service: str) -> Any:
    return boto3.client(service, region_name=REGION)  # type: ignore[call-overload]


def name(tier: str, role: str) -> str:
    return resource_name(STACK, tier, role)


# --- the stack ---------------------------------------------------------------------------------------------
def _subnets(ec2: Any) -> tuple[str, list[str]]:
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
    return vpc, sorted(s["SubnetId"] for s in subnets)[:3]


def _fleet_and_load_balancer() -> dict[str, str]:
    """An ALB with its HTTPS listener forwarding to the fleet's target group, and the fleet: an Auto Scaling
    group of three (at most six) from a launch template of one of moto's AMIs."""
    ec2, elbv2 = client("ec2"), client("elbv2")
    vpc, subnets = _subnets(ec2)
    ami = ec2.describe_images(ImageIds=[AMIS[0]["ami_id"]])["Images"][0]["ImageId"]  # one of moto's set
    template = ec2.create_launch_template(
        LaunchTemplateName=name("fleet", "lt"), LaunchTemplateData={"ImageId": ami, "InstanceType": "t3.small"}
    )["LaunchTemplate"]["LaunchTemplateId"]
    alb = elbv2.create_load_balancer(Name=name("lb", "alb"), Subnets=subnets[:2], Type="application")["LoadBalancers"]
    group = elbv2.create_target_group(Name=name("lb", "app"), Protocol="HTTP", Port=8000, VpcId=vpc)["TargetGroups"]
    certificate = client("acm").request_certificate(DomainName="drill.example.com")["CertificateArn"]
    listener = elbv2.create_listener(
        LoadBalancerArn=alb[0]["LoadBalancerArn"],
        Protocol="HTTPS",
        Port=443,
        Certificates=[{"CertificateArn": certificate}],
        DefaultActions=[{"Type": "forward", "TargetGroupArn": group[0]["TargetGroupArn"]}],
    )["Listeners"][0]["ListenerArn"]
    client("autoscaling").create_auto_scaling_group(
        AutoScalingGroupName=name("fleet", "asg"),
        LaunchTemplate={"LaunchTemplateId": template, "Version": "$Latest"},
        MinSize=3,
        MaxSize=6,
        DesiredCapacity=3,
        VPCZoneIdentifier=",".join(subnets),
        TargetGroupARNs=[group[0]["TargetGroupArn"]],
        HealthCheckType="ELB",
    )
    return {
        keys.LOAD_BALANCER_URL: f"https://{alb[0]['DNSName']}",
        keys.ASG_NAME: name("fleet", "asg"),
        keys.HTTPS_LISTENER_ARN: listener,
    }


def _data_tiers() -> dict[str, Any]:
    """RDS Multi-AZ, a Redis replication group of a primary and a replica, the job queue with its dead-letter
    queue (a message dead-letters at its second receive), and the versioned buckets."""
    db = client("rds").create_db_instance(
        DBInstanceIdentifier=name("database", "primary"),
        Engine="postgres",
        DBInstanceClass="db.t4g.micro",
        MasterUsername="pynomaly",
        MasterUserPassword="not-a-real-password",
        AllocatedStorage=20,
        MultiAZ=True,
    )["DBInstance"]
    redis = client("elasticache").create_replication_group(
        ReplicationGroupId=name("cache", "redis"),
        ReplicationGroupDescription="drill",
        Engine="redis",
        CacheNodeType="cache.t4g.micro",
        ReplicasPerNodeGroup=1,  # moto's way to two nodes with cluster mode off (the program sets the node count)
        AutomaticFailoverEnabled=True,
        MultiAZEnabled=True,
    )["ReplicationGroup"]
    sqs = client("sqs")
    jobs, dlq = queue_names(STACK)
    dlq_url = sqs.create_queue(QueueName=dlq)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1})
    jobs_url = sqs.create_queue(QueueName=jobs, Attributes={"RedrivePolicy": redrive})["QueueUrl"]
    s3, buckets = client("s3"), {}
    for role in ("artifacts", "backups"):
        bucket = buckets[role] = f"{name('storage', role)}-{ACCOUNT}"
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return {
        keys.DB_WRITER_ENDPOINT: db["Endpoint"]["Address"],
        keys.DB_READER_ENDPOINT: db["Endpoint"]["Address"],
        keys.DB_PRIMARY_IDENTIFIER: db["DBInstanceIdentifier"],
        keys.REDIS_PRIMARY_ENDPOINT: redis["NodeGroups"][0]["PrimaryEndpoint"]["Address"],
        keys.REDIS_READER_ENDPOINT: redis["NodeGroups"][0]["PrimaryEndpoint"]["Address"],
        keys.REDIS_REPLICATION_GROUP_ID: redis["ReplicationGroupId"],
        keys.QUEUE_URL: jobs_url,
        keys.DEAD_LETTER_QUEUE_URL: dlq_url,
        keys.ARTIFACTS_BUCKET: buckets["artifacts"],
        keys.BACKUPS_BUCKET: buckets["backups"],
    }


def alarm_names() -> dict[str, dict[str, str]]:
    """The ``alarms`` output as infra/alarms.py builds it for this stack."""
    names = names_by_key(catalogue(load(), db_replica=False), STACK, frozenset({Target.CLOUDWATCH}))
    return names | {SERVICE_DOWN_KEY: {Target.CLOUDWATCH.value: name("alarms", "service-down")}}


def put_alarms(names: dict[str, dict[str, str]], watched: list[str]) -> None:
    """The metric alarms of ``watched`` (moto has no composite alarms)."""
    cloudwatch = client("cloudwatch")
    for key in watched:
        cloudwatch.put_metric_alarm(
            AlarmName=names[key][Target.CLOUDWATCH],
            Namespace="Pynomaly/Drill",
            MetricName=key,
            Statistic="Average",
            Period=60,
            EvaluationPeriods=1,
            Threshold=1,
            ComparisonOperator="GreaterThanThreshold",
        )


WATCHED_ALARMS = ["error_rate.critical", "dlq_not_empty.warning"]


def build_stack() -> dict[str, Any]:
    """The stack's resources in moto (inside ``mock_aws``); returns its ``pulumi stack output --json``."""
    names = alarm_names()
    put_alarms(names, WATCHED_ALARMS)
    values = _fleet_and_load_balancer() | _data_tiers()
    return outputs_document(
        values
        | {
            keys.REGION: REGION,
            keys.DB_SECRET_ARN: f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:rds!db-drill",
            keys.REDIS_AUTH_SECRET_ARN: f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name('cache', 'auth')}",
            keys.AVAILABILITY_ZONES: [f"{REGION}{z}" for z in "abc"],
            keys.AVAILABILITY_ZONE_IDS: ["euw1-az1", "euw1-az2", "euw1-az3"],
            keys.ALARM_TOPIC_ARNS: {s: f"arn:aws:sns:{REGION}:{ACCOUNT}:{name('alarms', s)}" for s in SEVERITIES},
            keys.ALARMS: names,
        }
    )


# What the AWS fault library reads besides what every stack has (StackOutputs' required fields).
READ_BY_THE_LIBRARY = {
    keys.REGION,
    keys.ASG_NAME,
    keys.DB_PRIMARY_IDENTIFIER,
    keys.REDIS_REPLICATION_GROUP_ID,
    keys.HTTPS_LISTENER_ARN,
    keys.ALARMS,
}


def outputs_document(values: dict[str, Any]) -> dict[str, Any]:
    """``pulumi stack output --json`` of an EC2 stack: keys of pynomaly_ops/outputs.py only, none of the local
    stack's, with every one a stack must have and every one the AWS fault library reads."""
    required = {k for k, f in StackOutputs.model_fields.items() if f.is_required()} | READ_BY_THE_LIBRARY
    assert set(values) <= output_keys() - LOCAL_ONLY, f"not an EC2 stack's: {set(values) - output_keys() + LOCAL_ONLY}"
    assert set(values) >= required, f"missing {required - set(values)}"
    return values


def write_outputs(path: Path, document: dict[str, Any]) -> str:
    path.write_text(json.dumps(document, indent=2))
    return str(path)


class Calls:
    """Every API call made through a client the library asked :meth:`Target.client` for."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, Any]]] = []

    def watch(self, client: Any, service: str) -> Any:
        def record(params: dict[str, Any], model: Any, **_: Any) -> None:
            self.seen.append((service, model.name, dict(params)))

        client.meta.events.register("before-parameter-build.*.*", record, unique_id="aws-target-calls")
        return client

    def operations(self) -> set[tuple[str, str]]:
        return {(service, op) for service, op, _ in self.seen}

    def install(self, monkeypatch: Any) -> Calls:
        """Record every call of a client the AWS fault library asks :meth:`Target.client` for."""
        from aws_target.target import Target as Stack

        real, watch = Stack.client, self.watch
        monkeypatch.setattr(Stack, "client", lambda target, service: watch(real(target, service), service))
        return self

    def assert_allowed(self, stack: str = STACK) -> None:
        """Every call recorded is one docs/aws-drill-permissions.json allows; S3 ones stay in the drill's objects."""
        document = policy(stack)
        denied = [
            (op, action, arn)
            for service, op, params in self.seen
            for action, arn in required(service, op, params)
            if not allowed(document, action, arn)
        ]
        assert not denied, f"calls docs/aws-drill-permissions.json does not allow: {denied}"
        outside = [(op, p) for service, op, p in self.seen if service == "s3" and not within_drill_objects(op, p)]
        assert not outside, f"S3 calls outside the drill's objects: {outside}"


# --- the runner's IAM policy ---------------------------------------------------------------------------------
IAM_PREFIX = {"elbv2": "elasticloadbalancing"}  # boto3's service name -> the IAM service prefix, where they differ
ARN_FREE = "*"  # an action without resource-level permissions


def policy(stack: str = STACK) -> dict[str, Any]:
    """docs/aws-drill-permissions.json for ``stack``."""
    return dict(json.loads(POLICY_FILE.read_text().replace(STACK_PLACEHOLDER, stack)))


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def _s3(op: str, params: dict[str, Any]) -> list[tuple[str, str]]:
    bucket = f"arn:aws:s3:::{params['Bucket']}"
    if op in ("ListObjectsV2", "ListObjectVersions"):
        action = "s3:ListBucket" if op == "ListObjectsV2" else "s3:ListBucketVersions"
        return [(action, bucket)]
    obj = f"{bucket}/{params['Key']}"
    if op == "CopyObject":
        return [("s3:PutObject", obj), ("s3:GetObjectVersion", obj)]
    if op == "DeleteObject":
        return [("s3:DeleteObjectVersion" if "VersionId" in params else "s3:DeleteObject", obj)]
    return [(f"s3:{op}", obj)]


def _resource(service: str, op: str, params: dict[str, Any]) -> list[str]:
    """The ARNs IAM authorizes ``op`` on (moto's region and account), where the action has them."""
    at = f"{REGION}:{ACCOUNT}"
    group = f"arn:aws:autoscaling:{at}:autoScalingGroup:uuid:autoScalingGroupName/{name('fleet', 'asg')}"
    by_operation = {
        "SetDesiredCapacity": lambda: [group],
        "TerminateInstanceInAutoScalingGroup": lambda: [group],  # the instance's group
        "ModifyListener": lambda: [params["ListenerArn"]],
        "DescribeCluster": lambda: [f"arn:aws:eks:{at}:cluster/{params['name']}"],
        **dict.fromkeys(
            ("PutParameter", "GetParameter", "DeleteParameter"), lambda: [f"arn:aws:ssm:{at}:parameter{params['Name']}"]
        ),
        "StartExperiment": lambda: [
            f"arn:aws:fis:{at}:experiment-template/{params['experimentTemplateId']}",
            f"arn:aws:fis:{at}:experiment/new",  # the experiment it creates
        ],
        **dict.fromkeys(
            ("GetExperiment", "StopExperiment", "ListExperimentResolvedTargets"),
            lambda: [f"arn:aws:fis:{at}:experiment/{params.get('id') or params['experimentId']}"],
        ),
        "SendCommand": lambda: [
            f"arn:aws:ssm:{REGION}::document/{params['DocumentName']}",
            *(f"arn:aws:ec2:{at}:instance/{i}" for i in params["InstanceIds"]),
        ],
    }
    by_service = {
        "sqs": lambda: [f"arn:aws:sqs:{at}:{params['QueueUrl'].rsplit('/', 1)[1]}"],
        "rds": lambda: [f"arn:aws:rds:{at}:db:{params['DBInstanceIdentifier']}"],
        "elasticache": lambda: [f"arn:aws:elasticache:{at}:replicationgroup:{params['ReplicationGroupId']}"],
    }
    found = by_operation.get(op) or by_service.get(service)
    return found() if found else [ARN_FREE]


def required(service: str, op: str, params: dict[str, Any]) -> list[tuple[str, str]]:
    """What IAM must allow for one API call: ``(action, resource ARN)`` pairs."""
    if service == "s3":
        return _s3(op, params)
    return [(f"{IAM_PREFIX.get(service, service)}:{op}", arn) for arn in _resource(service, op, params)]


def allowed(document: dict[str, Any], action: str, arn: str) -> bool:
    """Some Allow statement names ``action`` and a resource pattern ``arn`` matches (an action without
    resource-level permissions needs ``*``). Conditions are not evaluated here."""
    for statement in document["Statement"]:
        if action not in _listed(statement["Action"]):
            continue
        resources = _listed(statement["Resource"])
        if arn == ARN_FREE and resources == [ARN_FREE]:
            return True
        if arn != ARN_FREE and any(fnmatch.fnmatchcase(arn, r) for r in resources):
            return True
    return False


def within_drill_objects(op: str, params: dict[str, Any]) -> bool:
    """The S3 calls stay in the drill's own prefix, which the policy's conditions and object ARNs grant."""
    where = params.get("Prefix") if op in ("ListObjectsV2", "ListObjectVersions") else params.get("Key")
    return str(where).startswith(object_versions.DRILL_OBJECTS)


# --- FIS: the stack's drill templates (infra/fault_injection.py), as moto holds them --------------------------
FIS_TARGET_KEYS = {"aws:ec2:instance": "Instances", "aws:rds:db": "DBInstances", "aws:eks:pod": "Pods"}


def fis_template(
    action: str, resource_type: str, target: dict[str, Any], parameters: dict[str, str] | None = None
) -> str:
    """A template shaped as the program declares them: one action on one target, tagged with the stack (what the
    runner's policy lets it start); returns its id, what ``fis_experiment_templates`` exports."""
    made = client("fis").create_experiment_template(
        description=f"Pynomaly {STACK}, {action}",
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/{name('fis', 'role')}",
        stopConditions=[{"source": "none"}],
        targets={"t": {"resourceType": resource_type, **target}},
        actions={
            "a": {"actionId": action, "targets": {FIS_TARGET_KEYS[resource_type]: "t"}, "parameters": parameters or {}}
        },
        tags={"Environment": STACK, "Name": name("fis", "template")},
    )
    return str(made["experimentTemplate"]["id"])


def instance_loss_template() -> str:
    """instance-loss's: one instance of the group, picked by FIS (``COUNT(1)``) by the group's tag."""
    return fis_template(
        "aws:ec2:terminate-instances",
        "aws:ec2:instance",
        {"resourceTags": {"aws:autoscaling:groupName": name("fleet", "asg")}, "selectionMode": "COUNT(1)"},
    )
