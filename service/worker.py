"""The batch worker: ``python -m service.worker`` (or ``pynomaly-worker``).

For each SQS message it claims the job in PostgreSQL, runs the detector, writes
the result to S3 under the job's key name and id and marks the job completed, then
deletes the message. The claim makes a redelivered message harmless: a finished job
is only acknowledged, a job held by a live worker is left alone. A failed message is
not deleted; the queue redelivers it, and its redrive policy moves it to the
dead-letter queue after maxReceiveCount receives. A failure that may pass (a
dependency down) waits out the visibility timeout before its next try; a poison
message (malformed, naming no job, or naming no key and an id that is not one key's)
is handed back at once, so it reaches the dead-letter queue, and its alarm, in
seconds rather than maxReceiveCount timeouts. While a job runs, a heartbeat
extends its message's visibility (every third of the queue's visibility timeout),
so a job longer than the timeout is not delivered to a second worker meanwhile.
On SIGTERM the worker stops receiving, hands in-flight messages back (visibility 0)
and exits.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from prometheus_client import start_http_server

from service import aws, db, metrics, store
from service.config import ConfigError, Settings, load_settings, require
from service.detector import Detector
from service.migrations import Schema
from service.queue import JobQueue, Message, VisibilityHeartbeat
from service.storage import ResultStore

log = logging.getLogger("service.worker")
DEFAULT_VISIBILITY_S = 30  # SQS's default, when the queue does not say


class PoisonMessage(ValueError):
    """A message no retry can fix (malformed, or not naming exactly one job): handed back for the redrive policy."""


class Stopping(Exception):
    """SIGTERM arrived while a message was in flight."""


def parse(message: Message) -> tuple[str | None, uuid.UUID, float]:
    """The key name (None in a message sent before jobs were per key), job id and submit time."""
    try:
        body = json.loads(message.body)
        key_name = body.get("key_name") if isinstance(body, dict) else None
        if not isinstance(key_name, str | None):
            raise TypeError(f"key_name is a {type(key_name).__name__}, not a string")
        return key_name, uuid.UUID(body["job_id"]), float(body["submitted_at"])
    except (ValueError, TypeError, KeyError) as exc:
        raise PoisonMessage(f"malformed job message {message.body[:80]!r}: {exc}") from exc


class Worker:
    def __init__(self, settings: Settings) -> None:
        require(settings, "queue_url")
        require(settings, "artifacts_bucket")
        self.settings = settings
        self.name = f"{settings.instance_id}-{os.getpid()}"
        self.stop = threading.Event()
        self.pool = db.open_pool(settings)
        self.schema = Schema(self.pool, settings.bootstrap_api_key).start()
        self.queue = JobQueue(settings)
        self.results = ResultStore(settings)
        self.detector = Detector(0, admit_timeout_s=None)  # this process exists to detect: inline, unbounded wait
        self.visibility_s = DEFAULT_VISIBILITY_S
        self.max_receives: int | None = None

    @property
    def lease_s(self) -> float:
        """The claim lease matches the visibility timeout; the heartbeat renews both."""
        return float(self.visibility_s)

    def _read_queue_policy(self) -> None:
        """The visibility timeout sets the heartbeat and the lease; maxReceiveCount tells the last attempt."""
        attributes = self.queue.attributes()
        self.visibility_s = int(attributes.get("VisibilityTimeout", DEFAULT_VISIBILITY_S))
        self.max_receives = self.queue.max_receives()

    def run(self) -> None:
        while not self.stop.is_set() and not self.schema.ready.wait(0.5):
            pass
        if self.stop.is_set():
            return
        self._read_queue_policy()
        log.info("worker %s consuming %s (lease %.0fs)", self.name, self.queue.url, self.lease_s)
        with ThreadPoolExecutor(self.settings.worker_concurrency, thread_name_prefix="job") as executor:
            while not self.stop.is_set():
                messages = self._receive()
                if not messages:
                    metrics.JOB_PROCESSING_LAG.set(0)
                    continue
                futures = [executor.submit(self.handle, m) for m in messages]
                while wait(futures, timeout=0.5).not_done:
                    pass  # wake regularly so the SIGTERM handler runs promptly
        log.info("worker %s stopped", self.name)

    def _receive(self) -> list[Message]:
        try:
            return self.queue.receive(self.settings.worker_concurrency, self.settings.worker_wait_s)
        except aws.AWS_ERRORS as exc:
            log.warning("queue receive failed, retrying: %s", exc)
            self.stop.wait(1.0)
            return []

    def handle(self, message: Message) -> None:
        """Process one message; never raises (an unhandled error would only hide the message's fate)."""
        try:
            if self.stop.is_set():
                self.queue.release(message)
                return
            self._process(message)
        except PoisonMessage as exc:
            metrics.JOBS.labels(status="failed").inc()
            log.error("poison message (receive %d of %s): %s", message.receive_count, self.max_receives, exc)
            self._hand_back_poison(message)
        except Exception as exc:  # the message stays unacknowledged: redelivered, or dead-lettered
            metrics.JOBS.labels(status="failed").inc()
            log.error("message failed (receive %d of %s): %s", message.receive_count, self.max_receives, exc)

    def _hand_back_poison(self, message: Message) -> None:
        """No wait can fix it: visible again at once, so the redrive policy dead-letters it after its last
        receive. Without a redrive policy it would only spin, so it then waits out the timeout like any failure."""
        if self.max_receives is None:
            return
        try:
            self.queue.release(message)
        except aws.AWS_ERRORS as exc:  # it comes back after the visibility timeout instead
            log.warning("could not hand the poison message back: %s", exc)

    def _process(self, message: Message) -> None:
        key_name, job_id, submitted_at = parse(message)
        metrics.JOB_PROCESSING_LAG.set(max(0.0, time.time() - submitted_at))
        ref = store.JobRef(key_name if key_name is not None else self._only_owner(job_id), job_id)
        job = store.claim_job(self.pool, ref, self.name, self.lease_s)
        if job is None:
            self._not_claimed(message, ref)
            return
        try:
            renew = functools.partial(store.renew_lease, self.pool, ref, self.name, self.lease_s)
            with VisibilityHeartbeat(self.queue, message, self.visibility_s, renew):
                result_key, n_flagged = self._run_job(ref, job)
        except Stopping:
            store.release_job(self.pool, ref, self.name, None, final=False)
            self.queue.release(message)
            log.info("job %s handed back to the queue on shutdown", job_id)
            return
        except Exception as exc:
            final = self.max_receives is not None and message.receive_count >= self.max_receives
            store.release_job(self.pool, ref, self.name, str(exc)[:500], final=final)
            raise
        store.finish_job(self.pool, ref, self.name, result_key, n_flagged)
        self.queue.delete(message)
        metrics.JOBS.labels(status="completed").inc()
        log.info("job %s completed on receive %d: %d points flagged", job_id, message.receive_count, n_flagged)

    def _only_owner(self, job_id: uuid.UUID) -> str:
        """The key of a message sent before jobs were per key. Ids were unique across keys then, so its id
        names one job, unless another key has since chosen the same id: which job it meant is then unknown,
        and running either could hand one key's result to the other, so it is poison (the DLQ alarm tells)."""
        owners = store.job_owners(self.pool, job_id)
        if len(owners) != 1:
            whose = "no key has" if not owners else "several keys have"
            raise PoisonMessage(f"message without a key name names job {job_id}, which {whose}: cannot tell")
        log.info("message without a key name (sent before jobs were per key): job %s has one key", job_id)
        return owners[0]

    def _not_claimed(self, message: Message, ref: store.JobRef) -> None:
        status = store.job_exists(self.pool, ref)
        if status is None:
            raise PoisonMessage(f"message names job {ref.id} of key {ref.key_name!r}, which does not exist")
        if status in ("completed", "failed"):
            self.queue.delete(message)  # a redelivery of finished work: acknowledge, do nothing
            log.info("duplicate message for %s job %s acknowledged", status, ref.id)
        else:  # another worker holds it: leave the message; it comes back after the visibility timeout
            log.info("job %s is held by another worker: message (receive %d) left", ref.id, message.receive_count)

    def _run_job(self, ref: store.JobRef, job: dict[str, Any]) -> tuple[str, int]:
        result = self.detector.run(job["input"], job["options"])
        if self.stop.is_set():
            raise Stopping
        document = {"job_id": str(ref.id), "options": job["options"], **result}
        key = self.results.put(ref.key_name, str(ref.id), document)  # same key every time: a retry overwrites
        if self.stop.is_set():
            raise Stopping
        return key, result["n_flagged"]

    def close(self) -> None:
        self.schema.stop()
        self.pool.close(timeout=5)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
        worker = Worker(settings)
    except ConfigError as exc:
        sys.exit(f"pynomaly-worker: {exc}")
    metrics.INSTANCE.info({"instance_id": settings.instance_id})
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, addr=settings.host)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop.set())
    try:
        worker.run()
    finally:
        worker.close()


if __name__ == "__main__":
    main()
