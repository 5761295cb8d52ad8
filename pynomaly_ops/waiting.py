"""Deadline-bounded polling: the one way the fault libraries (local/, aws_target/) wait for state."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Timeout(RuntimeError):
    pass


class NotYet(Exception):
    """Raised by a ``ready`` check to say what it still waits for: the timeout message names it."""


def wait_for(what: str, ready: Callable[[], T], timeout_s: float, interval_s: float = 0.2) -> T:
    """Poll ``ready`` until it returns something truthy or the deadline passes; returns that value.

    Exceptions from ``ready`` count as "not yet" (a server still starting refuses connections) and the
    last one is named in the timeout message, except ``AssertionError``: a failed check is a verdict,
    not a state to wait out, so it propagates at once.
    """
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            result = ready()
            if result:
                return result
        except AssertionError:
            raise
        except Exception as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {type(last_error).__name__}: {last_error})" if last_error else ""
            raise Timeout(f"{what} not ready after {timeout_s:g}s{detail}")
        time.sleep(interval_s)


def clock(since: float | None) -> Callable[[], float]:
    """Seconds since ``since`` (wall clock, e.g. a fault's ``time``; default now), measured monotonically."""
    offset = 0.0 if since is None else time.time() - since
    start = time.monotonic()
    return lambda: offset + time.monotonic() - start


def changed(probe: Callable[[], T], old: object) -> Callable[[], T | None]:
    """A ``ready`` check for :func:`wait_for`: the probe's value once it is no longer ``old``."""

    def ready() -> T | None:
        value = probe()
        return value if value != old else None

    return ready
