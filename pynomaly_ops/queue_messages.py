"""The job queue's messages as the drills handle them, the same on every target (local/, aws_target/): a
queue's depth, the poison message, and removing a drill's own dead letters. Each function takes an SQS
client (boto3's) and a queue URL.
"""

from __future__ import annotations

import time
from typing import Any

# SQS's two counts of a queue's messages: waiting to be received, and received but not yet deleted.
VISIBLE, IN_FLIGHT = "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"
RETRY_VISIBILITY_S = 5  # how long a dead letter received while searching stays hidden, at most


def depth(client: Any, url: str) -> tuple[int, int]:
    """The queue's ``(visible, in_flight)`` messages."""
    attrs = client.get_queue_attributes(QueueUrl=url, AttributeNames=[VISIBLE, IN_FLIGHT])["Attributes"]
    return int(attrs.get(VISIBLE, 0)), int(attrs.get(IN_FLIGHT, 0))


def poison_body(marker: str) -> str:
    """A body no worker can process (not a job), holding ``marker`` so :func:`remove_marked` finds it again."""
    return f"{marker}: not a job"


def remove_marked(client: Any, url: str, marker: str, timeout_s: float) -> int:
    """Delete the messages of queue ``url`` whose body holds ``marker``, leaving every other one in place; the
    others received on the way are made visible again at once. Returns how many were deleted."""
    deleted, deadline = 0, time.monotonic() + timeout_s
    while depth(client, url)[0] and time.monotonic() < deadline:
        messages = client.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=RETRY_VISIBILITY_S
        ).get("Messages")
        others = 0
        for m in messages or []:
            if marker in m["Body"]:
                client.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
                deleted += 1
            else:
                client.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
                others += 1
        if others == len(messages or []):  # only others' messages left: they stay
            break
    return deleted
