"""The AWS target's safety nets without a stack of servers: moto in-process answers for CloudWatch and SSM.

The alert watcher sees a stack's CloudWatch alarms by their catalogue keys (one already in ALARM when it starts
is not the fault's); the abort guard stops the experiment when a critical alarm users feel (STOP_ON) newly goes
to ALARM, and for nothing else; one drill per stack (its SSM parameter lock, naming the holder and how to remove
it); the drills' load goes to a stack only with an API key and the operator's leave to send load off this
machine; and ``drill run --target aws`` refuses what it must (no stack, production unconfirmed, a drill the
target has not) before touching anything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_testkit as kit
import pytest
from moto import mock_aws

import aws_target.target
from aws_target.lock import LOCK_PARAMETER, DrillLocked, ParameterLock
from aws_target.outputs import OUTPUTS_ENV, STACK_ENV
from drills import catalog, session, targets
from drills.session import AbortGuard, CloudWatchWatcher
from drills.targets import DrillError
from local.layout import STATE_ENV
from local.recorders import RequestRecorder
from pynomaly_ops.alarms import STOP_ON, Target
from pynomaly_ops.naming import API_KEY_ENV, DRILL_DB_DSN_ENV, LOAD_ALLOW_REMOTE_ENV
from pynomaly_ops.outputs import CLUSTER_NAME, LOAD_BALANCER_URL, StackOutputs

CRITICAL = "error_rate.critical"  # in STOP_ON: users get errors
LATENCY = "response_time_p95.critical"  # in STOP_ON, after CRITICAL in its order
WARNING = "dlq_not_empty.warning"  # not in STOP_ON: a drill may trip it
ALARMS = [CRITICAL, LATENCY, WARNING]  # the metric alarms put in moto, named as the Pulumi program names them
LOCK = LOCK_PARAMETER.format(stack=kit.STACK)
API_KEY = "drill-test-key"
TIMEOUT_S = 10


def _until(what: str, condition: Callable[[], object], timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.005)


# --- a stack in moto -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def document(tmp_path_factory) -> dict[str, Any]:
    """A stack's ``pulumi stack output --json`` as aws_testkit builds it (once: its resources are not read here)."""
    with pytest.MonkeyPatch.context() as patch:
        kit.isolated_credentials(patch, tmp_path_factory.mktemp("aws-config"))
        with mock_aws():
            return kit.build_stack()


@pytest.fixture
def outputs_file(document, tmp_path) -> Path:
    return Path(kit.write_outputs(tmp_path / "outputs.json", document))


def _aws_target(monkeypatch: pytest.MonkeyPatch, outputs_file: Path) -> None:
    """The environment ``drill run --target aws --stack drill --outputs FILE`` gives the experiments."""
    monkeypatch.setenv(targets.TARGET_ENV, targets.AWS)
    monkeypatch.setenv(STACK_ENV, kit.STACK)
    monkeypatch.setenv(OUTPUTS_ENV, str(outputs_file))
    for var in (targets.VIA_ENV, API_KEY_ENV, LOAD_ALLOW_REMOTE_ENV, DRILL_DB_DSN_ENV):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def aws(monkeypatch, tmp_path, outputs_file) -> Iterator[kit.Calls]:
    """The AWS target pointed at stack ``drill`` in moto, with its catalogue alarms ALARMS (all OK) and fast
    polls; every call the code under test makes is one the runner's IAM policy allows."""
    kit.isolated_credentials(monkeypatch, tmp_path)
    _aws_target(monkeypatch, outputs_file)
    monkeypatch.setattr(aws_target.target, "POLL_INTERVAL_S", 0.01)
    calls = kit.Calls().install(monkeypatch)
    with mock_aws():
        kit.put_alarms(kit.alarm_names(), ALARMS)
        yield calls
    calls.assert_allowed()


def _alarm_name(key: str) -> str:
    return kit.alarm_names()[key][Target.CLOUDWATCH]


@pytest.fixture
def alarms(aws) -> Callable[[str, str], float]:
    """``alarms(key, state)``: alarm ``key`` to ``state`` (as CloudWatch does when its metric breaches); returns
    when CloudWatch says it changed. Its client is made now, before the watcher's thread makes its own from
    boto3's default session (which is not safe to make clients from in two threads at once)."""
    cloudwatch = kit.client("cloudwatch")

    def set_state(key: str, state: str) -> float:
        return _set(cloudwatch, key, state)

    return set_state


def _set(cloudwatch: Any, key: str, state: str) -> float:
    name = _alarm_name(key)
    cloudwatch.set_alarm_state(AlarmName=name, StateValue=state, StateReason="drill test")
    (alarm,) = cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"]
    assert alarm["StateValue"] == state
    return float(alarm["StateUpdatedTimestamp"].timestamp())


def _stack_outputs(outputs_file: Path) -> StackOutputs:
    return StackOutputs.from_json_file(outputs_file)


@pytest.fixture
def watcher(aws, alarms, outputs_file) -> Iterator[CloudWatchWatcher]:
    """The watcher a drill on this stack gets (not started)."""
    found = session.watcher_for(_stack_outputs(outputs_file))
    assert isinstance(found, CloudWatchWatcher)
    yield found
    found.stop_event.set()
    if found.is_alive():
        found.join(5)


# --- the CloudWatch watcher -------------------------------------------------------------------------------------
def test_the_watcher_of_a_stack_watches_every_catalogue_alarm_it_has_in_cloudwatch(watcher, outputs_file):
    expected = {k for k, names in _stack_outputs(outputs_file).alarms.items() if Target.CLOUDWATCH in names}
    assert set(watcher.keys) == expected
    assert set(STOP_ON) | {WARNING} <= expected
    assert watcher.poll() == set()  # every alarm OK


def test_the_watcher_notes_alarms_newly_in_alarm_and_leaves_out_those_already_there(watcher, alarms):
    before = alarms(WARNING, "ALARM")  # already in ALARM when the drill starts: not the fault's
    assert watcher.poll() == {(WARNING, "firing", before)}  # since CloudWatch's own state change

    watcher.start()
    _until("the watcher's first poll", lambda: watcher.already_active is not None)
    assert watcher.already_active == {WARNING}
    assert watcher.firing == {WARNING} and watcher.seen == {}

    went = alarms(CRITICAL, "ALARM")  # the fault's
    _until(f"{CRITICAL} seen firing", lambda: CRITICAL in watcher.seen)
    assert watcher.seen == {CRITICAL: {"firing": went}}  # the one it was already in is still left out
    assert watcher.firing == {WARNING, CRITICAL}

    alarms(CRITICAL, "OK")
    _until(f"{CRITICAL} no longer firing", lambda: CRITICAL not in watcher.firing)
    assert watcher.seen == {CRITICAL: {"firing": went}}  # when it first fired stays on the record
    assert watcher.errors == 0
    assert watcher.already_active == {WARNING}


# --- the abort guard on AWS --------------------------------------------------------------------------------------
TICK_S = 0.05  # the guard's 1 s poll, scaled down


class FastEvent(threading.Event):
    def wait(self, timeout: float | None = None) -> bool:
        return super().wait(None if timeout is None else timeout * TICK_S)


@dataclass
class Guarded:
    guard: AbortGuard
    watcher: CloudWatchWatcher
    aborts: list[float]
    ticks: list[float]  # each time the guard looked at the alarms

    def start(self) -> None:
        self.watcher.start()
        self.guard.start()
        _until("the watcher's first poll", lambda: self.watcher.already_active is not None)

    def quiet_for(self, ticks: int) -> None:
        """``ticks`` more looks of the guard at the watcher's alarms, none of them tripping it."""
        seen = len(self.ticks)
        _until(f"{ticks} ticks of the guard", lambda: len(self.ticks) >= seen + ticks)
        assert self.guard.is_alive() and self.aborts == [] and self.guard.reason is None


@pytest.fixture
def guarded(watcher) -> Iterator[Guarded]:
    """A drill's abort guard on AWS as ``session.start`` makes it (the stack's watcher, STOP_ON), over a real
    request recorder that sends nothing (never started): only an alarm can trip it here."""
    recorder = RequestRecorder("http://127.0.0.1:9/api/v1/detect")
    guard = AbortGuard(recorder, critical_percent=5.0, hold_s=0.5, watcher=watcher, stop_on=STOP_ON)
    guard.stop_event = FastEvent()
    aborts: list[float] = []
    ticks: list[float] = []
    looks = guard._alarm

    def counted() -> str | None:
        ticks.append(time.monotonic())
        return looks()

    guard._alarm = counted  # type: ignore[method-assign]
    guard._abort = lambda: aborts.append(time.monotonic())  # type: ignore[method-assign]
    yield Guarded(guard, watcher, aborts, ticks)
    guard.stop_event.set()
    guard.join(5)
    recorder.stop()
    assert recorder.records == []  # nothing was sent


def _tripped(g: Guarded, key: str) -> None:
    g.guard.join(TIMEOUT_S)
    assert not g.guard.is_alive(), f"the guard did not trip on {key}"
    assert g.guard.reason == f"the critical alarm {key} went to ALARM"
    assert len(g.aborts) == 1 and g.guard.tripped_at is not None


def test_a_critical_alarm_users_feel_going_to_alarm_stops_the_drill(guarded, alarms):
    assert CRITICAL in STOP_ON
    guarded.start()
    guarded.quiet_for(3)  # all OK: the guard runs and does not trip
    alarms(CRITICAL, "ALARM")
    _tripped(guarded, CRITICAL)


def test_a_warning_alarm_does_not_stop_the_drill(guarded, alarms):
    assert WARNING not in STOP_ON
    guarded.start()
    alarms(WARNING, "ALARM")
    _until(f"the watcher sees {WARNING}", lambda: WARNING in guarded.watcher.seen)
    guarded.quiet_for(5)
    alarms(CRITICAL, "ALARM")  # the control: the same guard does trip on a critical one
    _tripped(guarded, CRITICAL)


def test_a_critical_alarm_already_in_alarm_at_the_start_does_not_stop_the_drill(guarded, alarms):
    alarms(CRITICAL, "ALARM")
    guarded.start()
    assert guarded.watcher.already_active == {CRITICAL}
    guarded.quiet_for(5)
    assert CRITICAL in guarded.watcher.firing  # still in ALARM, seen, and not the fault's
    alarms(LATENCY, "ALARM")  # another of STOP_ON, newly: it trips, naming that one
    _tripped(guarded, LATENCY)


def test_a_critical_alarm_active_at_the_start_that_clears_and_goes_off_again_stops_the_drill(guarded, alarms):
    """Active at the start, it was not the fault's; once it clears, raised again, it is."""
    alarms(CRITICAL, "ALARM")
    guarded.start()
    alarms(CRITICAL, "OK")
    _until("the watcher sees it clear", lambda: not guarded.watcher.already_active)
    guarded.quiet_for(2)
    alarms(CRITICAL, "ALARM")
    _tripped(guarded, CRITICAL)
    assert guarded.watcher.active_at_start == {CRITICAL}  # the record keeps what was active at the start


# --- one drill per stack: the SSM parameter lock -------------------------------------------------------------
def _lock_value(name: str = LOCK) -> str:
    return str(kit.client("ssm").get_parameter(Name=name)["Parameter"]["Value"])


def _lock_exists(name: str = LOCK) -> bool:
    return bool(kit.client("ssm").get_parameters(Names=[name])["Parameters"])


def test_a_second_drill_on_the_stack_is_refused_naming_the_holder_and_how_to_remove_the_lock(aws):
    first = targets.lock()
    assert isinstance(first, targets.StackLock) and first.name == LOCK == f"/pynomaly/{kit.STACK}/drill-lock"
    first.acquire("database-failover")
    holder = json.loads(_lock_value())
    assert holder["drill"] == "database-failover"
    assert (holder["host"], holder["pid"]) == (os.uname().nodename, os.getpid())

    second = targets.lock()
    with pytest.raises(DrillError) as refused:  # the runner reports a DrillError as any refusal
        second.acquire("cache-flush")
    message = str(refused.value)
    assert LOCK in message and _lock_value() in message  # who holds it: drill, host, pid, since
    assert f"aws ssm delete-parameter --name {LOCK}" in message
    with pytest.raises(DrillLocked, match="database-failover"):  # the AWS library's own error
        ParameterLock(kit.STACK).acquire("cache-flush")

    second.release()  # never held: the holder's lock stays
    assert json.loads(_lock_value())["drill"] == "database-failover"
    first.release()
    assert not _lock_exists()
    first.release()  # idempotent
    second.acquire("cache-flush")  # free again: the next drill takes it
    assert json.loads(_lock_value())["drill"] == "cache-flush"
    second.release()
    assert not _lock_exists()


def test_release_deletes_only_the_stacks_own_lock(aws):
    ssm = kit.client("ssm")
    other = LOCK_PARAMETER.format(stack="staging")  # another stack's drill, in the same account
    ssm.put_parameter(Name=other, Value='{"drill": "traffic-spike"}', Type="String")
    ssm.put_parameter(Name=f"/pynomaly/{kit.STACK}/settings", Value="kept", Type="String")
    lock = targets.lock()
    lock.acquire("instance-loss")  # another stack's lock does not hold this one
    lock.release()
    assert not _lock_exists()
    assert _lock_value(other) == '{"drill": "traffic-spike"}'
    assert _lock_value(f"/pynomaly/{kit.STACK}/settings") == "kept"


def test_release_leaves_a_lock_another_drill_took_after_ours_was_removed(aws):
    ours = targets.lock()
    ours.acquire("instance-loss")
    kit.client("ssm").delete_parameter(Name=LOCK)  # an operator follows the error's advice while ours runs...
    theirs = targets.lock()
    theirs.acquire("cache-failover")  # ...and another drill takes the stack
    ours.release()  # our drill ends
    assert _lock_exists() and json.loads(_lock_value())["drill"] == "cache-failover"
    theirs.release()


# --- the outputs: an API key, and leave to load a remote load balancer -------------------------------------------
@pytest.fixture
def aws_outputs(monkeypatch, tmp_path, outputs_file, document) -> str:
    """The AWS target on a stack whose load balancer is ALB's name (not this machine); returns that URL."""
    kit.isolated_credentials(monkeypatch, tmp_path)
    _aws_target(monkeypatch, outputs_file)
    url = str(document[LOAD_BALANCER_URL])
    assert url.startswith("https://") and url.endswith(".elb.amazonaws.com")
    return url


def test_the_drills_load_needs_an_api_key_for_the_stack(aws_outputs, monkeypatch):
    monkeypatch.setenv(LOAD_ALLOW_REMOTE_ENV, "1")
    with pytest.raises(DrillError) as refused:
        targets.outputs()
    assert f"${API_KEY_ENV}" in str(refused.value) and f"stack {kit.STACK}" in str(refused.value)
    monkeypatch.setenv(API_KEY_ENV, "")  # set but empty is no key either
    with pytest.raises(DrillError, match=API_KEY_ENV):
        targets.outputs()


def test_the_drills_writes_go_to_the_writer_endpoint_verified_unless_a_dsn_is_given(aws_outputs, monkeypatch, document):
    """database-failover writes through the stack's writer endpoint as the service does (the server verified,
    credentials from the libpq service file), or through $PYNOMALY_DRILL_DB_DSN."""
    monkeypatch.setenv(LOAD_ALLOW_REMOTE_ENV, "1")
    monkeypatch.setenv(API_KEY_ENV, API_KEY)
    host = document["db_writer_endpoint"]
    assert targets.outputs().db_writer_dsn == (
        f"host={host} port=5432 dbname=pynomaly sslmode=verify-full service=pynomaly"
    )
    monkeypatch.setenv(DRILL_DB_DSN_ENV, "host=10.0.1.5 dbname=pynomaly user=drill")
    assert targets.outputs().db_writer_dsn == "host=10.0.1.5 dbname=pynomaly user=drill"


@pytest.mark.parametrize("allow", [None, "0", "true", "yes"])
def test_a_remote_load_balancer_is_refused_without_leave_to_load_it(aws_outputs, monkeypatch, allow):
    monkeypatch.setenv(API_KEY_ENV, API_KEY)
    if allow is not None:
        monkeypatch.setenv(LOAD_ALLOW_REMOTE_ENV, allow)  # only "1" is leave
    with pytest.raises(DrillError) as refused:
        targets.outputs()
    message = str(refused.value)
    assert f"{LOAD_ALLOW_REMOTE_ENV}=1" in message and aws_outputs in message


def test_with_leave_the_remote_load_balancer_is_loaded_with_the_key(aws_outputs, monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, API_KEY)
    monkeypatch.setenv(LOAD_ALLOW_REMOTE_ENV, "1")
    found = targets.outputs()
    assert found.load_balancer_url == aws_outputs and found.api_key == API_KEY
    assert session._probe_recorder(found, 1, 1).url == f"{aws_outputs}/api/v1/detect"  # what start would load


def test_leave_covers_http_load_balancers_only(aws_outputs, monkeypatch, tmp_path, document):
    monkeypatch.setenv(API_KEY_ENV, API_KEY)
    monkeypatch.setenv(LOAD_ALLOW_REMOTE_ENV, "1")
    odd = kit.write_outputs(tmp_path / "odd.json", document | {LOAD_BALANCER_URL: "ftp://drill.example.com"})
    monkeypatch.setenv(OUTPUTS_ENV, odd)
    with pytest.raises(DrillError, match="not an http"):
        targets.outputs()


def test_a_loopback_load_balancer_needs_no_leave(aws_outputs, monkeypatch, tmp_path, document):
    """The control: the refusal above is about the host (as the AWS drills' tests point a stack at a local one)."""
    monkeypatch.setenv(API_KEY_ENV, API_KEY)
    local = kit.write_outputs(tmp_path / "local.json", document | {LOAD_BALANCER_URL: "http://127.0.0.1:8080"})
    monkeypatch.setenv(OUTPUTS_ENV, local)
    assert targets.outputs().load_balancer_url == "http://127.0.0.1:8080"


# --- drill run --target aws, and drill list's targets -------------------------------------------------------------
RAN, OPENED = 99, 98
STUBBED = f"""
import os
import sys
import drills.runner
def _run_drills(drills, say, state_dir, reports):
    target = os.environ.get("PYNOMALY_DRILL_TARGET"), os.environ.get("PYNOMALY_AWS_STACK")
    print("would run:", *[d.name for d in drills], "on", *target)
    sys.exit({RAN})
def open_stack(*args, **kwargs):
    print("would open the local stack")
    sys.exit({OPENED})
drills.runner._run_drills = _run_drills
drills.runner.open_stack = open_stack
sys.argv = ["pynomaly-ops", *sys.argv[1:]]
from pynomaly_cli.entry import main
main()
"""


@dataclass
class Ran:
    code: int
    out: str
    err: str  # stderr with rich's line wrapping undone


def _drill(*args: str, state: Path, env: dict[str, str] | None = None) -> Ran:
    """``pynomaly-ops drill ...`` in a process of its own whose runner validates for real, then stops before any
    drill runs (exit RAN) or any local stack is opened (exit OPENED)."""
    gone = (STACK_ENV, OUTPUTS_ENV, targets.TARGET_ENV, targets.VIA_ENV, API_KEY_ENV, LOAD_ALLOW_REMOTE_ENV)
    environment = {k: v for k, v in os.environ.items() if k not in gone} | {STATE_ENV: str(state)} | (env or {})
    cmd = [sys.executable, "-c", STUBBED, "drill", *args]
    proc = subprocess.run(cmd, env=environment, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return Ran(proc.returncode, proc.stdout, " ".join(proc.stderr.split()))


ALLOWED = {API_KEY_ENV: API_KEY, LOAD_ALLOW_REMOTE_ENV: "1"}  # so only what is tested can refuse


def test_the_aws_target_needs_a_stack(tmp_path, outputs_file):
    for args in (["--target", "aws"], ["--target", "aws", "--outputs", str(outputs_file)]):
        ran = _drill("run", "instance-loss", *args, state=tmp_path / "state", env=ALLOWED)
        assert ran.code == 2, (args, ran)
        assert "--target aws needs --stack NAME" in ran.err and "would run" not in ran.out
    assert not (tmp_path / "state").exists()


def test_the_prod_stack_needs_confirm_production(tmp_path, outputs_file):
    outputs = ["--outputs", str(outputs_file)]
    refused = _drill(
        "run", "instance-loss", "--target", "aws", "--stack", "prod", *outputs, state=tmp_path, env=ALLOWED
    )
    assert refused.code == 2, refused
    assert "stack prod is production" in refused.err and "Pass --confirm-production" in refused.err
    assert "would run" not in refused.out
    confirmed = _drill(
        "run", "instance-loss", "--target", "aws", "--stack", "prod", "--confirm-production", *outputs,
        state=tmp_path, env=ALLOWED,
    )  # fmt: skip
    assert confirmed.code == RAN, confirmed
    assert confirmed.out.strip() == "would run: instance-loss on aws prod"
    other = _drill(
        "run", "instance-loss", "--target", "aws", "--stack", kit.STACK, *outputs, state=tmp_path, env=ALLOWED
    )
    assert other.code == RAN, other  # only prod needs it
    assert other.out.strip() == f"would run: instance-loss on aws {kit.STACK}"


def test_the_stacks_outputs_are_checked_before_a_drill_runs(tmp_path, outputs_file):
    args = ["run", "instance-loss", "--target", "aws", "--stack", kit.STACK, "--outputs", str(outputs_file)]
    no_key = _drill(*args, state=tmp_path, env={LOAD_ALLOW_REMOTE_ENV: "1"})
    assert no_key.code == 2 and f"${API_KEY_ENV}" in no_key.err, no_key
    no_leave = _drill(*args, state=tmp_path, env={API_KEY_ENV: API_KEY})
    assert no_leave.code == 2 and f"{LOAD_ALLOW_REMOTE_ENV}=1" in no_leave.err, no_leave
    assert "would run" not in no_key.out + no_leave.out


def test_an_aws_only_drill_is_refused_on_the_local_target(tmp_path, document):
    ran = _drill("run", "pod-loss", state=tmp_path / "state")
    assert ran.code == 2, ran
    assert "pod-loss: no local implementation (its targets: aws)" in ran.err
    assert "would" not in ran.out
    assert not (tmp_path / "state").exists()  # refused before any local stack was opened
    eks = kit.write_outputs(tmp_path / "eks.json", document | {CLUSTER_NAME: f"{kit.STACK}-eks"})
    on_aws = _drill("run", "pod-loss", "--target", "aws", "--stack", kit.STACK, "--outputs", eks, state=tmp_path,
                    env=ALLOWED)  # fmt: skip
    assert on_aws.code == RAN, on_aws  # the control: on AWS, with EKS, it runs
    assert on_aws.out.strip() == f"would run: pod-loss on aws {kit.STACK}"


def _targets_column(stdout: str) -> dict[str, str]:
    """``drill list``'s targets cell of each drill (its wrapped lines joined)."""
    lines = [line.strip("│").split("│") for line in stdout.splitlines() if line.startswith("│")]
    cells: dict[str, list[str]] = {}
    current = None
    for row in lines:
        name, *_, where = (cell.strip() for cell in row)
        current = name or current
        assert current is not None
        cells.setdefault(current, []).extend([where] if where else [])
    return {name: " ".join(parts) for name, parts in cells.items()}


def test_list_shows_each_drills_targets(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pynomaly_cli.cli", "drill", "list"], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    header = next(line for line in proc.stdout.splitlines() if line.startswith("┃"))
    assert [c.strip() for c in header.strip("┃").split("┃")][-1] == "targets"
    column = _targets_column(proc.stdout)
    assert list(column) == [d.name for d in catalog.DRILLS]
    assert column["instance-loss"] == "local, aws"
    assert column["pod-loss"] == "aws (EKS)" and column["node-drain"] == "aws (EKS)"
    for d in catalog.DRILLS:
        named = [part.split(" (")[0] for part in column[d.name].split(", ")]
        assert named == list(d.targets), d.name
