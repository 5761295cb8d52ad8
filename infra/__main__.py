"""The Pynomaly platform: read the stack's settings, wire the tiers, export outputs."""

import pulumi
import pulumi_aws as aws

from infra import settings as stack_settings
from infra.queues import QueueTier, QueueTierArgs
from pynomaly_ops import outputs as keys

settings = stack_settings.from_pulumi()
key = aws.kms.Key("tmp", enable_key_rotation=True)
queues = QueueTier(settings.stack, settings.tags, QueueTierArgs(settings.queue, key.arn))
pulumi.export(keys.QUEUE_URL, queues.queue_url)
pulumi.export(keys.DEAD_LETTER_QUEUE_URL, queues.dead_letter_queue_url)
