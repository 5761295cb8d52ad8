"""The job queue (SQS). Messages carry only the job's key name, id and submit time; the job lives in
PostgreSQL (a job id names a job only within its API key's namespace).

Failed messages are not deleted: they reappear after the visibility timeout, and the
queue's redrive policy moves one that failed too often to the dead-letter queue.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pynomaly_ops.environment import ENV_NAMES
from service import aws, metrics
from service.config import Settings
from service.errors import DependencyUnavailable

log = logging.getLogger(__name__)
# A beat at a third of the timeout: one beat may fail or run late and the message still stays hidden.
HEARTBEAT_FRACTION = 1 / 3


@dataclass(frozen=True)
class Message:
    receipt: str
    body: str
    receive_count: int


class JobQueue:
    def __init__(self, settings: Settings) -> None:
        self.url = settings.queue_url
        self._sqs = aws.client(settings, "sqs")
        self._probe = aws.client(settings, "sqs", timeout_s=1, attempts=1)  # readiness must answer fast
        # A heartbeat must not outlast its interval by much: a failed beat is simply retried at the next one.
        self._beat = aws.client(settings, "sqs", timeout_s=5, attempts=1)

    def _require_url(self) -> str:
        if not self.url:
            raise DependencyUnavailable("queue", f"{ENV_NAMES['queue_url']} is not set")
        return self.url

    def send(self, key_name: str, job_id: str, submitted_at: float) -> None:
        body = json.dumps({"key_name": key_name, "job_id": job_id, "submitted_at": submitted_at})
        try:
            self._sqs.send_message(QueueUrl=self._require_url(), MessageBody=body)
        except aws.AWS_ERRORS as exc:
            raise DependencyUnavailable("queue", str(exc)) from exc
        metrics.QUEUE_SENT.inc()

    def receive(self, max_messages: int, wait_s: int) -> list[Message]:
        reply = self._sqs.receive_message(
            QueueUrl=self._require_url(),
            MaxNumberOfMessages=min(max_messages, 10),
            WaitTimeSeconds=wait_s,
            AttributeNames=["ApproximateReceiveCount"],
        )
        return [
            Message(m["ReceiptHandle"], m["Body"], int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)))
            for m in reply.get("Messages", [])
        ]

    def delete(self, message: Message) -> None:
        self._sqs.delete_message(QueueUrl=self._require_url(), ReceiptHandle=message.receipt)

    def release(self, message: Message) -> None:
        """Make the message visible again now, for another worker (graceful shutdown)."""
        self._sqs.change_message_visibility(
            QueueUrl=self._require_url(), ReceiptHandle=message.receipt, VisibilityTimeout=0
        )

    def extend(self, message: Message, timeout_s: int) -> None:
        """Keep the message hidden for ``timeout_s`` more seconds from now (a heartbeat)."""
        self._beat.change_message_visibility(
            QueueUrl=self._require_url(), ReceiptHandle=message.receipt, VisibilityTimeout=timeout_s
        )

    def attributes(self) -> dict[str, Any]:
        reply = self._sqs.get_queue_attributes(
            QueueUrl=self._require_url(), AttributeNames=["VisibilityTimeout", "RedrivePolicy"]
        )
        return reply.get("Attributes", {})

    def max_receives(self) -> int | None:
        """The redrive policy's maxReceiveCount: the attempt after which a message goes to the DLQ."""
        policy = self.attributes().get("RedrivePolicy")
        return int(json.loads(policy)["maxReceiveCount"]) if policy else None

    def check(self) -> str:
        try:
            self._probe.get_queue_attributes(QueueUrl=self._require_url(), AttributeNames=["QueueArn"])
        except (DependencyUnavailable, *aws.AWS_ERRORS) as exc:
            return f"failed: {exc}"
        return "ok"


class VisibilityHeartbeat:
    """Keeps one received message hidden while its job runs, by extending its visibility timeout.

    Without it a job that outlasts the timeout is delivered again while it still runs: the
    work is done twice, and every extra receive brings the message closer to the
    dead-letter queue as if it were poison. Used as a context manager around the work;
    leaving it stops the beats (and waits for one in flight) before the caller deletes or
    releases the message, so a late beat can never hide a released message again.
    """

    def __init__(
        self, queue: JobQueue, message: Message, timeout_s: int, renew_claim: Callable[[], object] | None = None
    ) -> None:
        """``renew_claim``, called after each beat, extends whatever else holds the job for the same time."""
        self._queue, self._message, self._timeout_s = queue, message, timeout_s
        self._renew_claim = renew_claim
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="visibility-heartbeat", daemon=True)

    @property
    def interval_s(self) -> float:
        return self._timeout_s * HEARTBEAT_FRACTION

    def __enter__(self) -> VisibilityHeartbeat:
        if self._timeout_s >= 1:  # a queue with a 0 s timeout redelivers at once: nothing to extend
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(self.interval_s):
            try:
                self._queue.extend(self._message, self._timeout_s)
            except (DependencyUnavailable, *aws.AWS_ERRORS) as exc:  # the next beat tries again
                log.warning("could not extend the message's visibility (%ss): %s", self._timeout_s, exc)
            if self._renew_claim is not None:
                try:
                    self._renew_claim()
                except DependencyUnavailable as exc:
                    log.warning("could not renew the job's claim (%ss): %s", self._timeout_s, exc)
