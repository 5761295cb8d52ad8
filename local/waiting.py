"""Deadline-bounded polling: the one way the local stack waits for state."""

from __future__ import annotations

import time
from collections.abc import Callable


class Timeout(RuntimeError):
    pass


def wait_for(what: str, ready: Callable[[], object], timeout_s: float, interval_s: float = 0.2) -> object:
    """Poll ``ready`` until it returns something truthy or the deadline passes.

    Exceptions from ``ready`` count as "not yet"; the last one is reported.
    """
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            result = ready()
            if result:
                return result
        except Exception as exc:  # a server still starting refuses connections
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise Timeout(f"{what} not ready after {timeout_s:g}s{detail}")
        time.sleep(interval_s)
