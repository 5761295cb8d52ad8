"""The SQS queues (with DLQ redrive) and S3 buckets the Pulumi program makes,
created in moto with the same names and settings."""

from __future__ import annotations

import contextlib
import json
from typing import Any, Literal, NamedTuple

import boto3

from local.wiring import AWS_ENV, Wiring, queue_settings, storage_settings
from pynomaly_ops import queue_messages
from pynomaly_ops.metrics import DEAD_LETTER_QUEUE, JOBS_QUEUE


def _client(wiring: Wiring, service: Literal["s3", "sqs"]):
    return boto3.client(
        service,
        endpoint_url=wiring.aws_endpoint_url,
        region_name=AWS_ENV["AWS_DEFAULT_REGION"],
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    )


def sqs(wiring: Wiring):
    return _client(wiring, "sqs")


def s3(wiring: Wiring):
    return _client(wiring, "s3")


def ensure_queues(wiring: Wiring) -> None:
    """Idempotent: create_queue returns the existing queue when attributes match."""
    s = queue_settings()
    client = sqs(wiring)
    jobs, dlq = wiring.queue_names
    dlq_url = client.create_queue(QueueName=dlq, Attributes={"MessageRetentionPeriod": str(s.dlq_retention_s)})[
        "QueueUrl"
    ]
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    client.create_queue(
        QueueName=jobs,
        Attributes={
            "VisibilityTimeout": str(s.visibility_timeout_s),
            "ReceiveMessageWaitTimeSeconds": str(s.receive_wait_s),
            "MessageRetentionPeriod": str(s.message_retention_s),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": s.max_receive_count}),
        },
    )


class QueueDepth(NamedTuple):
    name: str
    visible: int
    in_flight: int


def queue_depths(wiring: Wiring, client: Any = None) -> dict[str, QueueDepth]:
    """The job queue's and its dead-letter queue's counts, by role (``jobs``, ``dead_letters``)."""
    client = client or sqs(wiring)
    depths = {}
    for role, name in zip((JOBS_QUEUE, DEAD_LETTER_QUEUE), wiring.queue_names, strict=True):
        depths[role] = QueueDepth(name, *queue_messages.depth(client, wiring.queue_url(name)))
    return depths


def ensure_buckets(wiring: Wiring) -> None:
    """Versioned buckets, old versions expired after storage.noncurrent_version_days."""
    client = s3(wiring)
    days = storage_settings().noncurrent_version_days
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    for bucket in (wiring.artifacts_bucket, wiring.backups_bucket):
        if bucket not in existing:
            # the database's WAL archiver may have made it first (barman-cloud creates a missing bucket)
            with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                client.create_bucket(Bucket=bucket)
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        client.put_bucket_lifecycle_configuration(
            Bucket=bucket,
            LifecycleConfiguration={
                "Rules": [
                    {
                        "ID": "expire-noncurrent",
                        "Status": "Enabled",
                        "Filter": {"Prefix": ""},
                        "NoncurrentVersionExpiration": {"NoncurrentDays": days},
                    }
                ]
            },
        )


def ensure_resources(wiring: Wiring) -> None:
    ensure_queues(wiring)
    ensure_buckets(wiring)
