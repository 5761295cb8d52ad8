"""The Pynomaly API's load test, for plain Locust or ``pynomaly-ops load run``.

    locust -f loadtests/locustfile.py --headless                          # the local stack, shape normal
    locust -f loadtests/locustfile.py --headless --lt-shape peak --host http://127.0.0.1:8080

Open model: requests are due at fixed times computed from the shape (``loadtests/shapes.py``, levels from
``baselines.yaml``), independent of latency; users only carry them out, and a request no user could send
within ``LATE_TOLERANCE_S`` of its due time is dropped and counted against the achieved rate. With N worker
processes, worker ``i`` takes the requests whose number is ``i`` modulo N. Each process records every
response time in 1 ms buckets (loadtests/recording.py) and the workers send theirs to the master with
Locust's reports. At the end the master judges the run (loadtests/verdict.py), prints the verdict, writes
``recording.json`` and ``verdict.json`` into ``--lt-out`` and exits 0 (pass), 3 (a threshold missed) or 4
(invalid). While it runs it prints a progress line, stops the run when a critical threshold holds for
``load.abort_after_s`` (the abort guard) and, for ``step``, stops at the first step that broke.

Without ``--headless`` (a master left running, as on EKS: ``infra/load_generators.py``) each start from the
web UI or ``POST /swarm`` (which may set any ``--lt-*`` option) is a new run, judged when it stops; ``GET
/pynomaly/run`` answers its state, progress, verdict and recording (``loadtests/remote.py`` drives it).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
from locust import FastHttpUser, LoadTestShape, constant, events, task
from locust.runners import MasterRunner, WorkerRunner

from loadtests import shapes, thresholds, verdict
from loadtests.recording import Recording
from loadtests.workload import DEFAULT_REPEAT_SHARE, DEFAULT_SEED, JOB_SUBMIT, Generator
from pynomaly_ops.baselines import load
from pynomaly_ops.naming import LOAD_API_KEY_FILE_ENV, LOCUST_RUN_ROUTE

PLAN_MESSAGE = "pynomaly_plan"
FINAL_MESSAGE = "pynomaly_final"  # a worker's last recording, sent when it stops (web mode: no quit report)
PROGRESS_EVERY_S = 5
PROGRESS_PREFIX = "[load]"
ABORT_SLICE_S = 5
log = logging.getLogger("pynomaly.load")


@dataclass
class Plan:
    """This process's part of the run."""

    shape: shapes.Shape | None = None
    recording: Recording = field(default_factory=Recording)
    t0: float | None = None
    index: int = 0
    count: int = 1
    next_i: int = 0
    stop_requested: bool = False
    users_started: int = 0
    result: dict[str, Any] | None = None  # the verdict, once judged
    progress: str = ""

    def new_run(self, shape: shapes.Shape) -> None:
        """A fresh run (a master left running starts one run after another)."""
        self.shape, self.recording, self.t0, self.next_i = shape, Recording(), None, 0
        self.stop_requested, self.users_started, self.result, self.progress = False, 0, None, ""

    def start(self, t0: float, index: int, count: int) -> None:
        self.t0, self.index, self.count, self.next_i = t0, index, count, index
        self.recording.t0 = t0

    def next_due(self) -> float | None:
        """The next due time (seconds into the run) this process must send, dropping those already too late
        (one reading of the clock: at thousands a second, re-reading it would chase the boundary forever)."""
        assert self.shape is not None and self.t0 is not None
        if self.stop_requested:
            return None
        too_late = time.time() - self.t0 - shapes.LATE_TOLERANCE_S  # due before this: dropped
        due = self.shape.due(self.next_i)
        if due is not None and due < too_late:
            self._drop_before(too_late)
            due = self.shape.due(self.next_i)
        if due is None:
            return None
        self.next_i += self.count
        return due

    def _drop_before(self, t: float) -> None:
        assert self.shape is not None
        stop = max(self.next_i + 1, self.shape.first_due_from(t))
        per_second = self.shape.due_per_second(self.next_i, stop, self.count)
        for second, n in per_second.items():
            self.recording.dropped(second, n)
        self.next_i += max(1, sum(per_second.values())) * self.count


PLAN = Plan()


# --- options ------------------------------------------------------------------------------------------------
@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("Pynomaly load test (loadtests/)")
    group.add_argument("--lt-shape", default="normal", choices=shapes.SHAPES, help="Traffic shape.")
    group.add_argument("--lt-duration", default="", help="Run length (90, 5m, 1h30m); default: the shape's.")
    group.add_argument("--lt-target", default="local", help="Key of load.normal_rate_per_s (local, a stack name).")
    group.add_argument("--lt-rate", type=float, default=0.0, help="Normal rate override (requests/s).")
    group.add_argument("--lt-api-key", default="", env_var="PYNOMALY_API_KEY", help="Bearer key for /api/v1.")
    group.add_argument("--lt-mix", default="api", choices=("api", "health"), help="Request mix.")
    group.add_argument("--lt-seed", type=int, default=DEFAULT_SEED, help="Seed of the request data.")
    group.add_argument("--lt-repeat-share", type=float, default=DEFAULT_REPEAT_SHARE, help="Bodies sent again.")
    group.add_argument("--lt-fail-on", default="", choices=("", *thresholds.LEVELS), help="Failing severity.")
    group.add_argument("--lt-min-throughput", type=float, default=0.0, help="Minimum requests/s (0: none).")
    group.add_argument("--lt-max-users", type=int, default=shapes.MAX_USERS, help="Cap on concurrent users.")
    group.add_argument("--lt-workers", type=int, default=1, help="Worker processes (set by `load run`).")
    group.add_argument("--lt-no-abort", action="store_true", help="Disable the abort guard.")
    group.add_argument("--lt-out", default="", help="Directory for recording.json and verdict.json.")
    group.add_argument("--lt-run-id", default="", help="The driver's name for the run (web mode).")


def api_key(options: Any) -> str:
    """--lt-api-key ($PYNOMALY_API_KEY), else the file $PYNOMALY_API_KEY_FILE names (a mounted Secret, as on
    EKS: read as each user starts, so a rotated key is picked up)."""
    path = os.environ.get(LOAD_API_KEY_FILE_ENV)
    if options.lt_api_key or not path or not os.path.exists(path):
        return str(options.lt_api_key or "")
    return Path(path).read_text().strip()


def _shape_from(options: Any) -> shapes.Shape:
    b = load()
    rate = options.lt_rate or b.load.normal_rate(options.lt_target)
    duration = shapes.parse_duration(options.lt_duration) if options.lt_duration else None
    return shapes.build(options.lt_shape, b, rate, duration)


@events.init.add_listener
def _init(environment: Any, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.register_message(PLAN_MESSAGE, _plan_received)

        @events.report_to_master.add_listener
        def _report(client_id: str, data: dict[str, Any]) -> None:
            data["pynomaly"] = PLAN.recording.take_delta()

        return
    if isinstance(runner, MasterRunner):

        @events.worker_report.add_listener
        def _merge(client_id: str, data: dict[str, Any]) -> None:
            PLAN.recording.merge_delta(data.get("pynomaly") or {})

        runner.register_message(FINAL_MESSAGE, _final_received)
    if environment.web_ui is not None:
        environment.web_ui.app.add_url_rule(LOCUST_RUN_ROUTE, "pynomaly_run", lambda: _run_state(environment))

    options = environment.parsed_options
    if options is None:  # a library use of the locustfile: no Locust command line
        return
    if not environment.host:
        _use_local_stack(environment)
    from loadtests.targets import checked_url

    checked_url(environment.host)
    PLAN.shape = _shape_from(options)


def _use_local_stack(environment: Any) -> None:
    """No --host: the local stack's load balancer and key (PYNOMALY_LOCAL_STATE picks the stack)."""
    from loadtests.targets import local

    target = local(os.environ.get("PYNOMALY_LOCAL_STATE"))
    environment.host = target.url
    if not environment.parsed_options.lt_api_key and target.api_key:
        environment.parsed_options.lt_api_key = target.api_key


def _final_received(environment: Any, msg: Any, **_: Any) -> None:
    PLAN.recording.merge_delta(msg.data or {})


def _plan_received(environment: Any, msg: Any) -> None:
    # The master's options come with its spawn message, after this one: the plan carries them itself.
    vars(environment.parsed_options).update(msg.data["options"])
    PLAN.new_run(_shape_from(environment.parsed_options))
    PLAN.start(msg.data["t0"], environment.runner.worker_index, msg.data["workers"])


@events.test_start.add_listener
def _test_start(environment: Any, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        return
    t0 = time.time()
    workers = runner.worker_count if isinstance(runner, MasterRunner) else 1
    PLAN.start(t0, 0, 1)
    PLAN.recording.meta.update(
        {
            "started": t0,
            "workers": workers,
            "host": environment.host,
            "options": {k: v for k, v in vars(environment.parsed_options).items() if k.startswith("lt_")},
        }
    )
    options = PLAN.recording.meta["options"]
    options.pop("lt_api_key", None)
    if isinstance(runner, MasterRunner):
        runner.send_message(PLAN_MESSAGE, {"t0": t0, "workers": workers, "options": options})
    gevent.spawn(_monitor, environment)


@events.test_stop.add_listener
def _test_stop(environment: Any, **_: Any) -> None:
    PLAN.stop_requested = True
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.send_message(FINAL_MESSAGE, PLAN.recording.take_delta())
    elif not _headless(environment) and PLAN.t0 is not None and PLAN.result is None:
        _judge(environment)  # web mode: the master stays up; each run is judged as it stops


def _headless(environment: Any) -> bool:
    options = environment.parsed_options
    return bool(options is None or options.headless or options.autostart)


# --- the shape -------------------------------------------------------------------------------------------
class RunbookShape(LoadTestShape):
    """Users enough for the offered rate (the open model's schedule does the pacing); stops at the end."""

    def reset_time(self) -> None:
        """Called as each run starts, before its first tick (and again by a master's start, just after its
        test_start: that run goes on): a new run's plan from the options it starts with."""
        super().reset_time()
        environment = self.runner.environment if self.runner else None
        starting = PLAN.t0 is None or PLAN.stop_requested
        if starting and environment is not None and environment.parsed_options is not None:
            from loadtests.targets import checked_url

            checked_url(environment.host or "")
            PLAN.new_run(_shape_from(environment.parsed_options))

    def tick(self) -> tuple[int, float] | None:
        if PLAN.shape is None:
            return None
        options = self.runner.environment.parsed_options if self.runner else None
        workers = self.runner.worker_count if isinstance(self.runner, MasterRunner) else 1
        max_users = options.lt_max_users if options else shapes.MAX_USERS
        return shapes.tick(PLAN.shape, self.get_run_time(), workers, max_users, PLAN.stop_requested)


# --- the users -----------------------------------------------------------------------------------------
class ApiUser(FastHttpUser):
    """Carries out due requests; never paces itself (wait_time 0: the schedule waits)."""

    wait_time = constant(0)
    network_timeout = shapes.REQUEST_TIMEOUT_S
    connection_timeout = shapes.REQUEST_TIMEOUT_S

    def on_start(self) -> None:
        options = self.environment.parsed_options
        PLAN.users_started += 1
        seed = f"{options.lt_seed}-{PLAN.index}-{PLAN.users_started}"
        self.generator = Generator(seed, options.lt_mix, options.lt_repeat_share)
        key = api_key(options)
        self.auth = {"Authorization": f"Bearer {key}"} if key else {}

    @task
    def due_request(self) -> None:
        if PLAN.shape is None or PLAN.t0 is None:
            gevent.sleep(0.05)
            return
        # One call sends one request: a request already due goes at once, without yielding to the hub (at
        # the generator's ceiling every request is due, and a yield would let it slip past the tolerance).
        while True:
            due = PLAN.next_due()
            if due is None:
                gevent.sleep(0.5)
                return
            late = time.time() - (PLAN.t0 + due)
            if late < 0:
                gevent.sleep(-late)
                late = time.time() - (PLAN.t0 + due)
            if late <= shapes.LATE_TOLERANCE_S:
                break
            PLAN.recording.offered(due, sent=False)
        PLAN.recording.offered(due, sent=True, late_ms=1000 * max(0.0, late))
        self._send()

    def _send(self) -> None:
        g = self.generator
        kind = g.pick()
        body = g.body(kind)
        headers = dict(self.auth) if kind.authorized else {}
        if body is not None:
            headers["Content-Type"] = "application/json"
        # headers None rather than {}: an empty dict still costs geventhttpclient a header merge per request
        with self.client.request(
            kind.method, g.path(kind), name=kind.name, data=body, headers=headers or None, catch_response=True
        ) as response:
            status = response.status_code
            if kind.expected_status is not None:
                if status == kind.expected_status:
                    response.success()
                    response.request_meta["context"]["expected_4xx"] = True
                else:
                    response.failure(f"expected {kind.expected_status}, got {status}")
            elif not 200 <= status < 300:
                response.failure(f"status {status}")
            elif kind.name == JOB_SUBMIT:
                g.job_submitted(json.loads(response.text or "{}")["job"]["id"])


@events.request.add_listener
def _record(
    name: str,
    response_time: float,
    exception: BaseException | None,
    start_time: float | None = None,
    context: dict[str, Any] | None = None,
    **_: Any,
) -> None:
    expected = bool(context and context.get("expected_4xx"))
    PLAN.recording.record(name, start_time or time.time(), response_time, exception is not None, expected)


# --- the master's watch: progress, abort guard, the step that broke ---------------------------------------
def _lag_s(environment: Any) -> float:
    """How far behind the master's view is: the workers report every 3 s."""
    return 4.0 if isinstance(environment.runner, MasterRunner) else 1.0


def _monitor(environment: Any) -> None:
    options, b = environment.parsed_options, load()
    shape = PLAN.shape
    assert shape is not None and PLAN.t0 is not None
    guard = not options.lt_no_abort and not shape.judged_by_step
    judged_steps: set[float] = set()
    last_progress = 0.0
    while not PLAN.stop_requested:
        gevent.sleep(1.0)
        now = time.time() - PLAN.t0
        upto = now - _lag_s(environment)
        if now - last_progress >= PROGRESS_EVERY_S:
            last_progress = now
            _progress(environment, shape, now, upto)
        if guard and upto - shape.ramp_up_s >= b.load.abort_after_s:
            reason = _sustained_critical(upto, b)
            if reason:
                _stop(environment, f"a critical threshold held for {b.load.abort_after_s:g}s: {reason}", upto)
        if shape.judged_by_step:
            for _start, end, stage in shape.windows():
                if stage.label == "ramp-up" or end > upto or end in judged_steps:
                    continue
                judged_steps.add(end)
                steps = verdict.steps(PLAN.recording, shape, b, end)
                if steps["broke_at_per_s"] is not None:
                    last = steps["steps"][-1]
                    print(f"{PROGRESS_PREFIX} {last['step']} broke: {'; '.join(last['missed'])}", file=sys.stderr)
                    PLAN.recording.meta["stopped_at_s"] = end
                    PLAN.stop_requested = True


def _sustained_critical(upto: float, b: Any) -> str | None:
    window = b.load.abort_after_s
    reasons = []
    start = upto - window
    while start + ABORT_SLICE_S <= upto + 1e-9:
        reason = thresholds.critical_crossed(PLAN.recording.window(start, start + ABORT_SLICE_S), b)
        if reason is None:
            return None
        reasons.append(reason)
        start += ABORT_SLICE_S
    return reasons[-1] if reasons else None


def _stop(environment: Any, reason: str, at_s: float) -> None:
    print(f"{PROGRESS_PREFIX} ABORT: {reason}", file=sys.stderr)
    PLAN.recording.meta["aborted"] = reason
    PLAN.recording.meta["stopped_at_s"] = at_s
    PLAN.stop_requested = True


def _progress(environment: Any, shape: shapes.Shape, now: float, upto: float) -> None:
    rec = PLAN.recording
    recent = rec.window(upto - PROGRESS_EVERY_S, upto)
    pace = rec.pace_window(upto - PROGRESS_EVERY_S, upto)
    p95 = recent.percentile_ms(0.95)
    stage = shape.stage_at(now)
    PLAN.progress = (
        f"{now:5.0f}/{shape.duration_s:.0f}s {stage.label if stage else 'draining'}: "
        f"offered {pace.offered / PROGRESS_EVERY_S:.1f}/s achieved {pace.sent / PROGRESS_EVERY_S:.1f}/s "
        f"p95 {'-' if p95 is None else f'{p95:.0f} ms'} errors {recent.error_percent:.2f} % "
        f"users {environment.runner.user_count}"
    )
    print(f"{PROGRESS_PREFIX} {PLAN.progress}", file=sys.stderr, flush=True)


# --- the end: the verdict -------------------------------------------------------------------------------------
@events.quitting.add_listener
def _quitting(environment: Any, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner) or PLAN.shape is None or PLAN.t0 is None:
        return
    result = PLAN.result or _judge(environment)
    environment.process_exit_code = result["exit_code"]


def _judge(environment: Any) -> dict[str, Any]:
    """Judge the run, write recording.json and verdict.json into --lt-out (if given), print the verdict."""
    assert PLAN.shape is not None
    runner, options, rec = environment.runner, environment.parsed_options, PLAN.recording
    cpu = runner.cpu_warning_emitted or getattr(runner, "worker_cpu_warning_emitted", False)
    rec.meta["cpu_warning"] = bool(cpu)
    rec.meta["ended"] = time.time()
    result = verdict.judge(rec, PLAN.shape, load(), options.lt_fail_on or None, options.lt_min_throughput or None)
    if options.lt_out:
        out = Path(options.lt_out)
        out.mkdir(parents=True, exist_ok=True)
        rec.write(out / "recording.json")
        (out / "verdict.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"{PROGRESS_PREFIX} {result['message']}", file=sys.stderr, flush=True)
    PLAN.result = result
    return result


def _run_state(environment: Any) -> Any:
    """``GET /pynomaly/run``: the current (or last) run, for a driver that is not on this machine."""
    from flask import jsonify

    runner = environment.runner
    return jsonify(
        {
            "run_id": environment.parsed_options.lt_run_id,
            "state": runner.state,
            "workers": runner.worker_count if isinstance(runner, MasterRunner) else 0,
            "api_key": bool(api_key(environment.parsed_options)),  # set or not, never shown
            "shape": PLAN.shape.name if PLAN.shape else None,
            "progress": PLAN.progress,
            "verdict": PLAN.result,
            "recording": PLAN.recording.to_json() if PLAN.result else None,
        }
    )
