"""Queue tier: the job queue and its dead-letter queue (SQS).

Named ``queues`` rather than ``queue``: the program directory is first on
``sys.path`` when Pulumi runs it, where a ``queue.py`` would shadow the
standard library's ``queue`` module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.tier import Tier, deny_insecure_transport, policy_document
from pynomaly_ops.naming import queue_names
from pynomaly_ops.settings import Queue as QueueSettings

# What a job producer/consumer needs on the job queue, and nothing more
# (app fleet instance role, Kubernetes service accounts).
QUEUE_CLIENT_ACTIONS = [
    "sqs:SendMessage",
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
]


@dataclass(frozen=True)
class QueueTierArgs:
    settings: QueueSettings
    kms_key_arn: pulumi.Input[str]


class QueueTier(Tier):
    TIER = "queue"

    queue: aws.sqs.Queue
    queue_url: pulumi.Output[str]
    queue_arn: pulumi.Output[str]
    queue_name: pulumi.Output[str]
    dead_letter_queue: aws.sqs.Queue
    dead_letter_queue_url: pulumi.Output[str]
    dead_letter_queue_arn: pulumi.Output[str]
    dead_letter_queue_name: pulumi.Output[str]

    def __init__(
        self, stack: str, tags: dict[str, str], args: QueueTierArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__(stack, tags, opts)
        s = args.settings
        jobs_name, dlq_name = queue_names(stack)
        dlq = aws.sqs.Queue(
            self.name_of("jobs-dlq"),
            name=dlq_name,
            message_retention_seconds=s.dlq_retention_s,
            kms_master_key_id=args.kms_key_arn,
            kms_data_key_reuse_period_seconds=300,
            tags=self.tagged("jobs-dlq"),
            opts=self.child,
        )
        jobs = aws.sqs.Queue(
            self.name_of("jobs"),
            name=jobs_name,
            visibility_timeout_seconds=s.visibility_timeout_s,
            receive_wait_time_seconds=s.receive_wait_s,
            message_retention_seconds=s.message_retention_s,
            kms_master_key_id=args.kms_key_arn,
            kms_data_key_reuse_period_seconds=300,
            redrive_policy=dlq.arn.apply(
                lambda arn: json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": s.max_receive_count})
            ),
            tags=self.tagged("jobs"),
            opts=self.child,
        )
        # Only the job queue may send to the DLQ.
        aws.sqs.RedriveAllowPolicy(
            self.name_of("jobs-dlq-redrive-allow"),
            queue_url=dlq.url,
            redrive_allow_policy=jobs.arn.apply(
                lambda arn: json.dumps({"redrivePermission": "byQueue", "sourceQueueArns": [arn]})
            ),
            opts=self.child,
        )
        # TLS only, as the buckets: a request over plain HTTP is refused whoever makes it.
        for role, queue in (("jobs", jobs), ("jobs-dlq", dlq)):
            aws.sqs.QueuePolicy(
                self.name_of(f"{role}-tls-only"),
                queue_url=queue.url,
                policy=policy_document(deny_insecure_transport([queue.arn], "sqs:*")),
                opts=self.child,
            )
        self.queue = jobs
        self.queue_url = jobs.url
        self.queue_arn = jobs.arn
        self.queue_name = jobs.name
        self.dead_letter_queue = dlq
        self.dead_letter_queue_url = dlq.url
        self.dead_letter_queue_arn = dlq.arn
        self.dead_letter_queue_name = dlq.name
        self.register_outputs(
            {
                "queue": self.queue,
                "queue_url": self.queue_url,
                "queue_arn": self.queue_arn,
                "queue_name": self.queue_name,
                "dead_letter_queue": self.dead_letter_queue,
                "dead_letter_queue_url": self.dead_letter_queue_url,
                "dead_letter_queue_arn": self.dead_letter_queue_arn,
                "dead_letter_queue_name": self.dead_letter_queue_name,
            }
        )
