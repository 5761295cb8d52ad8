"""The visibility heartbeat's life cycle, without servers: it beats while the work runs, keeps
beating through failed calls, and has stopped for good when the work ends."""

from __future__ import annotations

import threading

from botocore.exceptions import EndpointConnectionError
from servers import wait_until

from service.queue import Message, VisibilityHeartbeat

MESSAGE = Message(receipt="r-1", body="{}", receive_count=1)


class RecordingQueue:
    """Records each extension; the first ``failures`` calls fail as an unreachable SQS would."""

    def __init__(self, failures: int = 0) -> None:
        self.calls: list[tuple[str, int]] = []
        self.failures = failures
        self.lock = threading.Lock()

    def extend(self, message: Message, timeout_s: int) -> None:
        with self.lock:
            self.calls.append((message.receipt, timeout_s))
            if len(self.calls) <= self.failures:
                raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")


def test_beats_at_a_third_of_the_timeout_and_stop_with_the_work():
    queue = RecordingQueue()
    heartbeat = VisibilityHeartbeat(queue, MESSAGE, timeout_s=1)  # type: ignore[arg-type]
    assert heartbeat.interval_s == 1 / 3
    with heartbeat:
        wait_until(lambda: len(queue.calls) >= 2, 10, "two beats")
    assert not heartbeat._thread.is_alive()  # joined: no beat can follow the caller's delete or release
    assert set(queue.calls) == {("r-1", 1)}  # each beat asks for the full timeout again


def test_a_failed_beat_is_retried_at_the_next_one():
    queue = RecordingQueue(failures=2)
    with VisibilityHeartbeat(queue, MESSAGE, timeout_s=1):  # type: ignore[arg-type]
        wait_until(lambda: len(queue.calls) >= 3, 10, "a beat after two failures")


def test_a_zero_timeout_queue_gets_no_heartbeat():
    queue = RecordingQueue()
    with VisibilityHeartbeat(queue, MESSAGE, timeout_s=0) as heartbeat:  # type: ignore[arg-type]
        assert not heartbeat._thread.is_alive()
    assert queue.calls == []
