"""Recorders: what clients saw while a fault ran.

``RequestRecorder`` sends bounded, open-model load at a URL and records every request;
``WriteRecorder`` writes numbered rows through a libpq DSN and records every acknowledged one,
so that ``lost_writes()`` can read back what the database kept. Both are context managers that
stop on every exit path, and each has a function form (``record_requests``, ``record_writes``)
for Chaos Toolkit background activities: run for a duration, write the records as JSON lines,
return a summary.

Loopback targets only: this machine's rules forbid traffic anywhere else.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from local import zones
from local.waiting import wait_for
from pynomaly_ops.naming import LOAD_ALLOW_REMOTE_ENV

DEFAULT_RATE_PER_S = 20.0
MAX_RATE_PER_S = 200.0
DEFAULT_WRITE_RATE_PER_S = 200.0
MAX_WRITE_RATE_PER_S = 1000.0
# However a recorder is started, it stops itself after this long.
MAX_DURATION_S = 3600.0
DEFAULT_TABLE = "drill_write_probe"
# A failed write is retried after this pause (a reconnect), so a down database is not hammered.
WRITE_RETRY_S = 0.1
LOOPBACK_NAMES = ("localhost",)
_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class NotLoopbackError(ValueError):
    """A recorder was pointed at a host that is not this machine's loopback."""


class RecorderError(RuntimeError):
    """A recorder could not run (its thread crashed, or its table could not be made)."""


# --- loopback only ----------------------------------------------------------------
def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1, ``localhost``, or an address of the zones of a zoned local stack on this machine (its
    own network namespaces, local/zones.py); names are not resolved (a name could point anywhere)."""
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback or zones.is_project_address(host)
    except ValueError:
        return False


def remote_allowed() -> bool:
    """The operator said the target is a remote one they operate (a stack on AWS): ``$PYNOMALY_LOAD_ALLOW_REMOTE=1``.
    Never set on this machine, whose rules allow loopback traffic only."""
    return os.environ.get(LOAD_ALLOW_REMOTE_ENV) == "1"


def recorder_url(url: str) -> str:
    """What a recorder may send to: loopback, or anywhere the operator allowed (:func:`remote_allowed`)."""
    if remote_allowed() and urlsplit(url).scheme in ("http", "https") and urlsplit(url).hostname:
        return url
    return ensure_loopback_url(url)


def recorder_dsn(dsn: str) -> str:
    return dsn if remote_allowed() else ensure_loopback_dsn(dsn)


def ensure_loopback_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NotLoopbackError(f"refusing {url!r}: not an http(s) URL with a host")
    if not is_loopback_host(parts.hostname):
        raise NotLoopbackError(
            f"refusing {url!r}: host {parts.hostname!r} is not a loopback address (127.0.0.0/8, ::1, localhost) "
            f"nor one of a zoned local stack's; this machine's rules forbid traffic elsewhere (a stack you operate: "
            f"{LOAD_ALLOW_REMOTE_ENV}=1)"
        )
    return url


def ensure_loopback_dsn(dsn: str) -> str:
    """Every host of a libpq conninfo (multi-host lists included) is loopback or a unix socket directory."""
    params = conninfo_to_dict(dsn)
    hosts = [h for key in ("host", "hostaddr") for h in str(params.get(key) or "").split(",") if h]
    foreign = [h for h in hosts if not h.startswith(("/", "@")) and not is_loopback_host(h)]
    if foreign:
        raise NotLoopbackError(
            f"refusing a DSN with host(s) {', '.join(foreign)}: not loopback addresses (127.0.0.0/8, ::1, localhost); "
            "this machine's rules forbid traffic elsewhere"
        )
    return dsn


def _bounded(name: str, value: float, maximum: float) -> float:
    if not 0 < value <= maximum:
        raise ValueError(f"{name} must be above 0 and at most {maximum:g}, got {value:g}")
    return value


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """One JSON object per line; returns the number of lines."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with target.open("w") as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")
            count += 1
    return count


# --- requests: records and their summary ------------------------------------------
@dataclass(frozen=True)
class RequestRecord:
    """One request. ``t``/``at`` are its scheduled start (monotonic / wall clock): in an open model a
    request exists from the moment it is due, so ``latency_s`` counts any wait for a client thread too."""

    t: float
    at: float
    status: int | None
    error: str | None
    latency_s: float

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}


def _ordered(records: Iterable[RequestRecord]) -> list[RequestRecord]:
    return sorted(records, key=lambda r: r.t)


def error_rate_percent(records: Sequence[RequestRecord]) -> float:
    return 100 * sum(not r.ok for r in records) / len(records) if records else 0.0


def p95_latency_s(records: Sequence[RequestRecord]) -> float | None:
    """Nearest-rank 95th percentile over answered requests (a refused connection has no response time)."""
    latencies = sorted(r.latency_s for r in records if r.status is not None)
    if not latencies:
        return None
    return latencies[math.ceil(0.95 * len(latencies)) - 1]


def outage_windows(records: Iterable[RequestRecord]) -> list[dict[str, float]]:
    """Runs of consecutive failed requests, in schedule order. A window lasts from the first failure's start
    to the start of the next successful request (or, when none followed, the end of its last failure)."""
    windows: list[dict[str, float]] = []
    run: list[RequestRecord] = []
    for record in [*_ordered(records), None]:
        if record is not None and not record.ok:
            run.append(record)
            continue
        if run:
            end = record.t if record is not None else max(r.t + r.latency_s for r in run)
            windows.append({"start_at": run[0].at, "seconds": end - run[0].t, "failures": len(run)})
            run = []
    return windows


def longest_outage_s(records: Iterable[RequestRecord]) -> float:
    return max((w["seconds"] for w in outage_windows(records)), default=0.0)


def last_failure_at(records: Iterable[RequestRecord]) -> float | None:
    """Wall-clock scheduled start of the last failed request."""
    return max((r.at for r in records if not r.ok), default=None)


def request_summary(records: Sequence[RequestRecord]) -> dict[str, Any]:
    failures = [r for r in records if not r.ok]
    return {
        "requests": len(records),
        "ok": len(records) - len(failures),
        "failed": len(failures),
        "error_rate_percent": error_rate_percent(records),
        "p95_latency_s": p95_latency_s(records),
        "longest_outage_s": longest_outage_s(records),
        "last_failure_at": last_failure_at(records),
        "errors": sorted({r.error or str(r.status) for r in failures})[:10],
    }


# --- requests: the recorder -------------------------------------------------------
class RequestRecorder:
    """Open-model load: request i is due at start + i / rate whatever happened to the others. A small pool
    of client threads sends them, so one slow request does not stop the clock; a request that waited longer
    than the timeout for a free thread is recorded as failed, unsent (the target is holding every thread)."""

    def __init__(
        self,
        url: str,
        rate_per_s: float = DEFAULT_RATE_PER_S,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
        timeout_s: float = 5.0,
        max_duration_s: float = MAX_DURATION_S,
        concurrency: int = 8,
    ) -> None:
        self.url = recorder_url(url)
        self.rate_per_s = _bounded("rate_per_s", rate_per_s, MAX_RATE_PER_S)
        self.max_duration_s = _bounded("max_duration_s", max_duration_s, MAX_DURATION_S)
        self.timeout_s = _bounded("timeout_s", timeout_s, 60)
        self.concurrency = int(_bounded("concurrency", concurrency, 64))
        self.method, self.headers, self.json_body = method.upper(), dict(headers or {}), json_body
        self._records: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._due: queue.SimpleQueue[tuple[float, float] | None] = queue.SimpleQueue()
        self._scheduler = threading.Thread(target=self._schedule, name="request-recorder", daemon=True)
        self._workers = [
            threading.Thread(target=self._work, name=f"request-recorder-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        self._client = httpx.Client(timeout=timeout_s, limits=httpx.Limits(max_connections=self.concurrency))
        self._crash: BaseException | None = None

    # life cycle
    def start(self) -> RequestRecorder:
        for thread in [*self._workers, self._scheduler]:
            thread.start()
        return self

    def run_for(self, duration_s: float) -> None:
        """Block for ``duration_s`` (or until the recorder stops itself at its cap)."""
        self._scheduler.join(_bounded("duration_s", duration_s, self.max_duration_s))

    def stop(self) -> None:
        """Stop scheduling; requests already due are sent (or given up) within twice their timeout. Idempotent."""
        self._stop.set()
        if self._scheduler.ident is not None:  # started
            deadline = time.monotonic() + 2 * self.timeout_s + 5
            for thread in [self._scheduler, *self._workers]:
                thread.join(max(0.0, deadline - time.monotonic()))
        self._client.close()
        if self._crash is not None:
            raise RecorderError(f"the request recorder failed: {self._crash!r}") from self._crash

    def __enter__(self) -> RequestRecorder:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # results
    @property
    def records(self) -> list[RequestRecord]:
        with self._lock:
            return _ordered(self._records)

    @property
    def ok_count(self) -> int:
        with self._lock:
            return sum(r.ok for r in self._records)

    @property
    def failures(self) -> list[RequestRecord]:
        return [r for r in self.records if not r.ok]

    def summary(self) -> dict[str, Any]:
        return request_summary(self.records) | {"url": self.url, "rate_per_s": self.rate_per_s}

    def wait_for_ok(self, count: int, timeout_s: float) -> int:
        """Wait until ``count`` requests have succeeded (traffic is flowing)."""
        wait_for(f"{count} successful requests to {self.url}", lambda: self.ok_count >= count, timeout_s)
        return self.ok_count

    # threads
    def _schedule(self) -> None:
        t0, wall0 = time.monotonic(), time.time()
        try:
            for i in range(math.ceil(self.max_duration_s * self.rate_per_s)):
                due = t0 + i / self.rate_per_s
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    break
                self._due.put((due, wall0 + (due - t0)))
        except BaseException as exc:  # reported by stop()
            self._crash = exc
        finally:
            # After the requests already due: each is sent, or recorded unsent once past the timeout.
            for _ in self._workers:
                self._due.put(None)

    def _work(self) -> None:
        while (item := self._due.get()) is not None:
            due, at = item
            if time.monotonic() - due > self.timeout_s:
                self._record(due, at, status=None, error="not sent: every client thread busy past the timeout")
                continue
            try:
                response = self._client.request(self.method, self.url, headers=self.headers, json=self.json_body)
                self._record(due, at, status=response.status_code, error=None)
            except Exception as exc:  # any client-side failure is a failed request, not a dead thread
                self._record(due, at, status=None, error=f"{type(exc).__name__}: {exc}")

    def _record(self, due: float, at: float, status: int | None, error: str | None) -> None:
        record = RequestRecord(t=due, at=at, status=status, error=error, latency_s=time.monotonic() - due)
        with self._lock:
            self._records.append(record)


# --- writes -----------------------------------------------------------------------
@dataclass(frozen=True)
class WriteAttempt:
    """One INSERT of row ``id``; ``t``/``at`` are its start (monotonic / wall clock). Acknowledged when
    COMMIT returned (autocommit): ``error`` is None."""

    id: int
    t: float
    at: float
    latency_s: float
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}


def lost_window_s(attempts: Iterable[WriteAttempt], lost: Sequence[int]) -> float:
    """The span of time whose acknowledged writes are lost: from the last write the database kept before the
    first lost one to the last lost one (0 when none is lost). A client's view of the RPO."""
    if not lost:
        return 0.0
    gone = set(lost)
    acked = [a for a in attempts if a.ok]
    lost_at = [a.at for a in acked if a.id in gone]
    kept_before = [a.at for a in acked if a.id < min(gone) and a.id not in gone]
    return max(lost_at) - (max(kept_before) if kept_before else min(lost_at))


def write_outage(attempts: Iterable[WriteAttempt]) -> dict[str, Any]:
    """From the first failed write's start to the acknowledgement of the first write after it. Not recovered:
    until the end of the last attempt. ``seconds`` is None when no write failed."""
    ordered = sorted(attempts, key=lambda a: a.t)
    first = next((a for a in ordered if not a.ok), None)
    if first is None:
        return {"seconds": None, "first_failure_at": None, "recovered": True}
    back = next((a for a in ordered if a.ok and a.t > first.t), None)
    end = back if back is not None else ordered[-1]
    return {
        "seconds": end.t + end.latency_s - first.t,
        "first_failure_at": first.at,
        "recovered": back is not None,
    }


def _valid_table(name: str) -> str:
    if not _TABLE_NAME.fullmatch(name):
        raise ValueError(f"table name {name!r}: lower-case letters, digits and _ only, at most 63")
    return name


class WriteRecorder:
    """Writes numbered rows into its own table (created fresh at start) through a libpq DSN in autocommit,
    paced at ``rate_per_s``; remembers every acknowledged id and every error with their times."""

    def __init__(
        self,
        dsn: str,
        table: str = DEFAULT_TABLE,
        rate_per_s: float = DEFAULT_WRITE_RATE_PER_S,
        max_duration_s: float = MAX_DURATION_S,
        setup_timeout_s: float = 30.0,
    ) -> None:
        self.dsn = recorder_dsn(dsn)
        self.table = _valid_table(table)
        self.rate_per_s = _bounded("rate_per_s", rate_per_s, MAX_WRITE_RATE_PER_S)
        self.max_duration_s = _bounded("max_duration_s", max_duration_s, MAX_DURATION_S)
        self.setup_timeout_s = setup_timeout_s
        self._attempts: list[WriteAttempt] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="write-recorder", daemon=True)
        self._crash: BaseException | None = None

    # the probe table
    def _execute(self, *statements: sql.Composed) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)

    def create_table(self) -> None:
        """A fresh, empty table: ids restart at 1 every run (retried until the deadline: a primary may be moving)."""
        table = sql.Identifier(self.table)
        drop = sql.SQL("DROP TABLE IF EXISTS {}").format(table)
        create = sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY)").format(table)
        self._retrying(f"the write probe table {self.table}", lambda: self._execute(drop, create))

    def drop_table(self) -> None:
        drop = sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(self.table))
        self._retrying(f"dropping {self.table}", lambda: self._execute(drop))

    def _retrying(self, what: str, action: Callable[[], None]) -> None:
        def done() -> bool:
            action()
            return True

        wait_for(what, done, self.setup_timeout_s, interval_s=0.5)

    # life cycle
    def start(self) -> WriteRecorder:
        self.create_table()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Idempotent; an INSERT in flight finishes (or fails) first."""
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(30)
        if self._thread.is_alive():
            raise RecorderError("the write recorder did not stop within 30s (an INSERT is hanging)")
        if self._crash is not None:
            raise RecorderError(f"the write recorder failed: {self._crash!r}") from self._crash

    def run_for(self, duration_s: float) -> None:
        self._thread.join(_bounded("duration_s", duration_s, self.max_duration_s))

    def __enter__(self) -> WriteRecorder:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # results
    @property
    def attempts(self) -> list[WriteAttempt]:
        with self._lock:
            return list(self._attempts)

    @property
    def acked_count(self) -> int:
        with self._lock:
            return sum(a.ok for a in self._attempts)

    @property
    def acked_ids(self) -> list[int]:
        return [a.id for a in self.attempts if a.ok]

    @property
    def errors(self) -> list[WriteAttempt]:
        return [a for a in self.attempts if not a.ok]

    def wait_for_acknowledged(self, count: int, timeout_s: float) -> int:
        """Wait until ``count`` writes in all have been acknowledged; returns the count then."""
        wait_for(f"{count} acknowledged writes", lambda: self.acked_count >= count, timeout_s)
        return self.acked_count

    def stored_ids(self, timeout_s: float = 30.0) -> set[int]:
        """Every id in the table, read through the DSN (retried until the deadline: a primary may be moving)."""

        def read() -> tuple[set[int]]:
            with psycopg.connect(self.dsn) as conn:
                rows = conn.execute(sql.SQL("SELECT id FROM {}").format(sql.Identifier(self.table))).fetchall()
            return ({int(row[0]) for row in rows},)  # a tuple: truthy even when the set is empty

        return wait_for(f"reading back {self.table}", read, timeout_s, interval_s=0.5)[0]

    def lost_writes(self, timeout_s: float = 30.0) -> list[int]:
        """Acknowledged ids the database does not have (read back through the DSN: the current primary)."""
        stored = self.stored_ids(timeout_s)
        return sorted(set(self.acked_ids) - stored)

    def outage(self) -> dict[str, Any]:
        return write_outage(self.attempts)

    def summary(self, lost: Sequence[int] | None = None) -> dict[str, Any]:
        attempts = self.attempts
        failed = [a for a in attempts if not a.ok]
        return {
            "table": self.table,
            "attempts": len(attempts),
            "acknowledged": len(attempts) - len(failed),
            "errors": len(failed),
            "outage": write_outage(attempts),
            "lost_writes": None if lost is None else len(lost),
            "lost_window_s": None if lost is None else lost_window_s(attempts, lost),
            "lost_ids": None if lost is None else list(lost[:20]),
            "error_kinds": sorted({(a.error or "").split(":")[0] for a in failed})[:10],
        }

    # the writing thread
    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        n, next_due = 0, time.monotonic()
        deadline = next_due + self.max_duration_s
        insert = sql.SQL("INSERT INTO {} (id) VALUES (%s)").format(sql.Identifier(self.table))
        try:
            while not self._stop.wait(max(0.0, next_due - time.monotonic())) and time.monotonic() < deadline:
                n += 1
                start, at = time.monotonic(), time.time()
                try:
                    conn = conn or psycopg.connect(self.dsn, autocommit=True)
                    conn.execute(insert, (n,))
                    self._append(WriteAttempt(n, start, at, time.monotonic() - start, None))
                except psycopg.Error as exc:
                    self._append(WriteAttempt(n, start, at, time.monotonic() - start, f"{type(exc).__name__}: {exc}"))
                    _close(conn)
                    conn = None
                    self._stop.wait(WRITE_RETRY_S)
                # Paced, never bursting to catch up after an outage.
                next_due = max(next_due + 1 / self.rate_per_s, time.monotonic())
        except BaseException as exc:  # reported by stop()
            self._crash = exc
        finally:
            _close(conn)

    def _append(self, attempt: WriteAttempt) -> None:
        with self._lock:
            self._attempts.append(attempt)


def _close(conn: psycopg.Connection[Any] | None) -> None:
    if conn is not None:
        with contextlib.suppress(psycopg.Error):
            conn.close()
