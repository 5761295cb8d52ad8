"""The local stack against its requirements, on one real stack per session.

Tests run in file order; the failure drills come after the reachability
checks and `down` comes last.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid

import boto3
import httpx
import psycopg
import pytest
import redis
import yaml
from conftest import RunningStack, cli
from local_traffic import Traffic
from test_local_rules import assert_covers_every_threshold

from local import health
from local.layout import ZONES
from local.procs import listeners, stack_pids
from local.programs import ETCD_MEMBERS, FLEET_GROUP, PATRONI_MEMBERS, PATRONI_TTL_S, START_NOW_FILE, patroni_program
from local.stack import bound_ports
from local.supervisor import log_tail
from local.waiting import Timeout, wait_for
from local.wiring import AWS_ENV, queue_settings
from pynomaly_ops.baselines import load
from pynomaly_ops.outputs import StackOutputs

pytestmark = pytest.mark.integration

B = load()


def _aws(running: RunningStack, service: str):
    return boto3.client(
        service,
        endpoint_url=running.outputs.aws_endpoint_url,
        region_name="us-east-1",
        **{
            "aws_access_key_id": AWS_ENV["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        },
    )


def _api(running: RunningStack) -> httpx.Client:
    return httpx.Client(
        base_url=running.outputs.load_balancer_url,
        headers={"Authorization": f"Bearer {running.outputs.api_key}"},
        timeout=10,
    )


def _endpoint(hostport: str) -> tuple[str, int]:
    host, port = hostport.rsplit(":", 1)
    return host, int(port)


# --- up ----------------------------------------------------------------------------
def test_up_from_cold_is_under_a_minute(running: RunningStack):
    assert running.up_seconds < 60, f"up took {running.up_seconds:.1f}s"


def test_a_second_up_changes_nothing(running: RunningStack):
    before = {r["name"]: r["pid"] for r in running.stack.status()}
    result = cli(running.env, "up")
    assert "program changes: none" in result.stderr
    assert {r["name"]: r["pid"] for r in running.stack.status()} == before
    # A start flag left beside a running member would let its next crash restart race the standby.
    assert [m for m in PATRONI_MEMBERS if (running.layout.member_dir(m) / START_NOW_FILE).exists()] == []


def test_status_json_lists_every_process_healthy(running: RunningStack):
    rows = json.loads(cli(running.env, "status", "--json").stdout)
    names = {r["name"] for r in rows}
    assert {*ETCD_MEMBERS, "haproxy", "moto", "prometheus", "patroni-a", "patroni-b", "redis-a", "sentinel-c"} <= names
    assert sum(n.startswith("api-") for n in names) == B.scaling.instances_normal
    assert [r["name"] for r in rows if not r["healthy"]] == []


def test_outputs_have_exactly_the_stack_output_keys(running: RunningStack):
    printed = json.loads(cli(running.env, "outputs", "--json").stdout)
    assert set(printed) == set(StackOutputs.model_fields)
    local_only = ("db_writer_dsn", "api_key", "aws_endpoint_url", "prometheus_url", "asg_name")
    assert all(printed[k] for k in local_only)
    assert printed["alarm_names"] and printed["db_secret_arn"] is None


# --- every piece reachable --------------------------------------------------------
def test_database_endpoints_route_to_primary_and_replica(running: RunningStack):
    password = running.layout.secrets["app_db_password"]
    for endpoint, in_recovery in (
        (running.outputs.db_writer_endpoint, False),
        (running.outputs.db_reader_endpoint, True),
    ):
        host, port = _endpoint(endpoint)
        dsn = f"host={host} port={port} dbname=pynomaly user=pynomaly password={password} connect_timeout=3"
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is in_recovery
    with psycopg.connect(running.outputs.db_writer_dsn) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
        assert conn.execute("SHOW synchronous_standby_names").fetchone()[0], "commits must wait for the standby"
    assert health.database_ready(running.layout.ports["patroni"])


def test_redis_endpoints_route_by_role(running: RunningStack):
    for endpoint, role in (
        (running.outputs.redis_primary_endpoint, b"master"),
        (running.outputs.redis_reader_endpoint, b"slave"),
    ):
        host, port = _endpoint(endpoint)
        assert redis.Redis(host=host, port=port, socket_timeout=2).role()[0] == role


def test_queues_and_buckets_match_the_pulumi_program(running: RunningStack):
    sqs = _aws(running, "sqs")
    attrs = sqs.get_queue_attributes(QueueUrl=running.outputs.queue_url, AttributeNames=["All"])["Attributes"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=running.outputs.dead_letter_queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": queue_settings().max_receive_count}
    assert int(attrs["VisibilityTimeout"]) == queue_settings().visibility_timeout_s
    s3 = _aws(running, "s3")
    for bucket in (running.outputs.artifacts_bucket, running.outputs.backups_bucket):
        assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"


def test_prometheus_scrapes_every_target_and_loads_every_rule(running: RunningStack):
    url = running.outputs.prometheus_url

    def all_up():
        targets = httpx.get(f"{url}/api/v1/targets", timeout=3).json()["data"]["activeTargets"]
        jobs = {t["labels"]["job"] for t in targets}
        return jobs >= {"api", "worker", "haproxy", "postgres", "redis", "node", "patroni"} and all(
            t["health"] == "up" for t in targets
        )

    wait_for("every Prometheus target up", all_up, 30, interval_s=1)
    groups = httpx.get(f"{url}/api/v1/rules", timeout=3).json()["data"]["groups"]
    loaded = {r["name"] for g in groups for r in g["rules"]}
    assert set(running.outputs.alarm_names) <= loaded


def test_rules_file_contains_every_threshold(running: RunningStack):
    deployed = yaml.safe_load((running.layout.conf_dir / "rules.yml").read_text())
    assert_covers_every_threshold(deployed["groups"][0]["rules"])


def test_a_request_through_the_load_balancer_reaches_every_backend(running: RunningStack):
    with _api(running) as api:
        ready = api.get("/ready").json()
        assert ready["checks"] == {"database": "ok", "queue": "ok", "cache": "ok"}
        body = {"series": [1.0, 1.1, 0.9, 1.0, 1.05, 25.0]}
        first = api.post("/api/v1/detect", json=body)
        assert first.status_code == 200, first.text
        assert first.json()["flags"][-1] is True
        assert api.post("/api/v1/detect", json=body).json()["cached"] is True  # Redis answered
        job = api.post("/api/v1/jobs", json=body | {"job_id": str(uuid.uuid4())}).json()["job"]

        def finished():
            state = api.get(f"/api/v1/jobs/{job['id']}").json()["job"]
            return state if state["status"] in ("completed", "failed") else None

        done = wait_for("the worker to finish the job (queue)", finished, 30, interval_s=0.3)
    assert done["status"] == "completed", done
    result = _aws(running, "s3").get_object(Bucket=running.outputs.artifacts_bucket, Key=done["result_key"])
    assert json.loads(result["Body"].read())  # the result landed in S3


# --- failure drills ---------------------------------------------------------------
def test_a_killed_instance_leaves_the_load_balancer_within_3s_and_is_replaced(running: RunningStack):
    sup, lb = running.stack.supervisor, running.stack.haproxy
    victim = "api-1"
    old_pid = sup.info()[victim]["pid"]
    with Traffic(f"{running.outputs.load_balancer_url}/health") as traffic:
        wait_for("traffic flowing", lambda: traffic.ok > 20, 10)
        killed = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)
        wait_for("instance marked DOWN", lambda: lb.server_status()[victim].startswith("DOWN"), 3, interval_s=0.05)
        out_after = time.monotonic() - killed
        wait_for("a replacement process", lambda: sup.info()[victim]["pid"] not in (0, old_pid), 10)
        wait_for("the replacement back in rotation", lambda: lb.server_status()[victim] == "UP", 60)
    print(f"\ninstance out of the load balancer {out_after:.2f}s after SIGKILL; errors {traffic.failed[:5]}")
    assert out_after <= 3
    assert traffic.error_rate_percent <= B.instance_loss_max_error_rate_percent, traffic.failed[:10]


def test_scale_to_high_load_and_back_drops_no_request(running: RunningStack):
    lb = running.stack.haproxy
    with Traffic(f"{running.outputs.load_balancer_url}/health") as traffic:
        wait_for("traffic flowing", lambda: traffic.ok > 20, 10)
        cli(running.env, "scale", str(B.scaling.instances_high_load))
        status = lb.server_status(FLEET_GROUP)
        assert len(status) == B.scaling.instances_high_load and set(status.values()) == {"UP"}
        zones = [r["zone"] for r in running.stack.status() if r["name"].startswith("api-")]
        assert sorted(set(zones)) == ["a", "b", "c"] and max(map(zones.count, set(zones))) == 2
        cli(running.env, "scale", str(B.scaling.instances_normal))
    assert len(lb.server_status(FLEET_GROUP)) == B.scaling.instances_normal
    assert traffic.failed == [], traffic.failed[:10]
    assert traffic.ok > 0


class Writer(threading.Thread):
    """Writes numbered rows through the writer DSN; remembers every acknowledged one.

    A context manager: leaving the block stops it on every path, so a failed test leaves no writer behind.
    """

    def __init__(self, dsn: str):
        super().__init__(daemon=True)
        self.dsn, self.acked, self.errors = dsn, [], 0
        self.stop = threading.Event()

    def __enter__(self) -> Writer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.join(10)

    def run(self) -> None:
        n, conn = 0, None
        while not self.stop.is_set():
            try:
                conn = conn or psycopg.connect(self.dsn, autocommit=True)
                n += 1
                conn.execute("INSERT INTO failover_probe (id) VALUES (%s)", (n,))
                self.acked.append(n)  # COMMIT returned: acknowledged
            except psycopg.Error:
                self.errors += 1
                conn = None
                self.stop.wait(0.1)


def _leader(running: RunningStack) -> str:
    roles = health.patroni_roles(running.layout.ports["patroni"])
    return next(m for m, r in roles.items() if r == "leader")


def _fresh_probe_table(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS failover_probe")
        conn.execute("CREATE TABLE failover_probe (id bigint PRIMARY KEY)")


def _etcd_leader(running: RunningStack) -> str:
    """The etcd member that leads the Raft group (the worst one to lose)."""
    ids = {}
    for name, zone in ETCD_MEMBERS.items():
        url = f"http://{ZONES[zone]}:{running.layout.ports['etcd']}/v3/maintenance/status"
        status = httpx.post(url, json={}, timeout=2).json()
        ids[status["header"]["member_id"]] = name
        leader = status["leader"]
    return ids[leader]


def _wait_db(running: RunningStack, what: str, ready, timeout_s: float):
    """wait_for, with both Patroni logs in the failure message."""
    try:
        return wait_for(what, ready, timeout_s, interval_s=0.2)
    except Timeout as exc:
        logs = "\n".join(f"--- {n} ---\n{log_tail(running.layout, n, 40)}" for n in ("patroni-a", "patroni-b"))
        pytest.fail(f"{exc}\n{logs}")


def test_killing_the_postgres_primary_fails_over_without_losing_acknowledged_writes(running: RunningStack):
    dsn = running.outputs.db_writer_dsn
    _fresh_probe_table(dsn)
    ready = lambda: health.database_ready(running.layout.ports["patroni"])  # noqa: E731
    _wait_db(running, "a leader and a synchronous standby before the drill", ready, 60)
    old = _leader(running)
    patroni_pid = running.stack.supervisor.info()[patroni_program(old)]["pid"]
    postmaster_file = running.layout.member_dir(old) / "data" / "postmaster.pid"
    postmaster_pid = int(postmaster_file.read_text().split()[0])
    with Writer(dsn) as writer:
        wait_for("writes flowing", lambda: len(writer.acked) > 50, 10)
        killed = time.monotonic()
        os.kill(patroni_pid, signal.SIGKILL)
        os.kill(postmaster_pid, signal.SIGKILL)
        new = _wait_db(running, "a new primary", lambda: (m := _leader(running)) != old and m, 30)
        failover_s = time.monotonic() - killed
        acked_at_failover = len(writer.acked)
        resumed = lambda: len(writer.acked) > acked_at_failover + 50  # noqa: E731
        _wait_db(running, "writes resuming on the new primary", resumed, 30)
    with psycopg.connect(dsn) as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM failover_probe")}
    lost = sorted(set(writer.acked) - stored)
    print(f"\nPostgreSQL: new primary {new} {failover_s:.1f}s after SIGKILL of {old}; {len(writer.acked)} acked")
    assert failover_s <= 30
    assert len(lost) <= B.recovery.database_failover.acknowledged_writes_lost
    _wait_db(running, "the old primary back as synchronous standby", ready, 90)


def test_losing_the_etcd_leader_leaves_the_database_primary_in_place(running: RunningStack):
    """One zone's DCS member gone (frozen, as a lost host is) for twice Patroni's ttl: the other two keep a
    quorum, so the primary keeps its leader key and never demotes, and writes keep being acknowledged."""
    dsn = running.outputs.db_writer_dsn
    _fresh_probe_table(dsn)
    ready = lambda: health.database_ready(running.layout.ports["patroni"])  # noqa: E731
    _wait_db(running, "a leader and a synchronous standby before the drill", ready, 90)
    primary, victim = _leader(running), _etcd_leader(running)
    sup = running.stack.supervisor
    with Writer(dsn) as writer:
        wait_for("writes flowing", lambda: len(writer.acked) > 50, 10)
        victim_pid = sup.info()[victim]["pid"]
        sup.signal(victim, "STOP")
        leaders, acked_before = [], len(writer.acked)
        try:
            held_until = time.monotonic() + 2 * PATRONI_TTL_S  # the fault's duration, not a wait for state
            while time.monotonic() < held_until:
                try:
                    roles = health.patroni_roles(running.layout.ports["patroni"])
                except ConnectionError:  # no Patroni answering counts against the primary too
                    roles = {}
                leaders.append(next((m for m, r in roles.items() if r == "leader"), None))
                time.sleep(0.5)  # the sampling interval
        finally:
            os.kill(victim_pid, signal.SIGKILL)  # supervisord restarts it; it rejoins with its data
    print(
        f"\netcd: leader {victim} frozen {2 * PATRONI_TTL_S}s; primary {set(leaders)}; "
        f"{len(writer.acked) - acked_before} writes acknowledged meanwhile, {writer.errors} errors"
    )
    assert leaders and set(leaders) == {primary}, leaders
    assert len(writer.acked) - acked_before > 100 and writer.errors == 0
    _wait_db(
        running,
        "all three etcd members healthy again",
        lambda: all(
            health.http_ok(f"http://{ZONES[z]}:{running.layout.ports['etcd']}/health") for z in ETCD_MEMBERS.values()
        ),
        30,
    )


def test_killing_the_redis_primary_fails_over_via_sentinel(running: RunningStack):
    sentinels = [(a, running.layout.ports["sentinel"]) for a in ("127.0.1.1", "127.0.2.1", "127.0.3.1")]
    old = health.redis_primary(sentinels)
    victim = next(
        r for r in running.stack.status() if r["name"].startswith("redis-") and r["address"] == f"{old[0]}:{old[1]}"
    )
    sup = running.stack.supervisor
    # Node loss: frozen first (so the supervisor cannot bring it straight back
    # as if nothing happened), then killed once the Sentinels have moved on.
    sup.signal(victim["name"], "STOP")
    frozen = time.monotonic()
    try:
        new = wait_for(
            "a new Redis primary",
            lambda: (p := health.redis_primary(sentinels)) != old and p,
            B.recovery.cache_failover.rto_s,
            interval_s=0.2,
        )
        failover_s = time.monotonic() - frozen
    finally:
        # On every path, failover or not, the frozen node dies and supervisord brings it back:
        # no test after this one inherits a stopped Redis.
        os.kill(victim["pid"], signal.SIGKILL)
    host, port = _endpoint(running.outputs.redis_primary_endpoint)
    wait_for(
        "the primary endpoint following the new primary",
        lambda: redis.Redis(host=host, port=port, socket_timeout=1).set("probe", "1"),  # replicas refuse writes
        10,
    )
    wait_for(
        "the old primary back as a replica",
        lambda: redis.Redis(host=old[0], port=old[1], socket_timeout=1).role()[0] == b"slave",
        30,
        interval_s=0.5,
    )
    with _api(running) as api:
        wait_for("the service's cache healthy", lambda: api.get("/ready").json()["checks"]["cache"] == "ok", 20)
    print(f"\nRedis: new primary {new} {failover_s:.1f}s after the primary {old} stopped answering")


def test_up_recovers_a_stack_left_by_a_crash(running: RunningStack):
    """supervisord killed (its children orphaned, pid files and sockets stale)
    and a Patroni member dead: the next `up` clears the orphans and restarts all."""
    stack = running.stack
    member = next(m for m, r in health.patroni_roles(running.layout.ports["patroni"]).items() if r != "leader")
    postmaster_pid = int((running.layout.member_dir(member) / "data" / "postmaster.pid").read_text().split()[0])
    patroni_pid = stack.supervisor.info()[patroni_program(member)]["pid"]
    os.kill(stack.supervisor.pid(), signal.SIGKILL)
    os.kill(patroni_pid, signal.SIGKILL)
    os.kill(postmaster_pid, signal.SIGKILL)
    assert not stack.supervisor.running() and stack_pids(running.layout)  # orphans left behind
    result = cli(running.env, "up")
    assert "left by a crashed run" in result.stderr
    assert [r["name"] for r in running.stack.status() if not r["healthy"]] == []
    assert health.database_ready(running.layout.ports["patroni"])


# --- down (last) ------------------------------------------------------------------
def test_down_leaves_nothing_running(running: RunningStack):
    ports = {(a, p) for _, a, p in bound_ports(running.layout, running.stack.programs())}
    cli(running.env, "down")
    assert stack_pids(running.layout) == {}
    assert [ap for ap in listeners() if ap in ports] == []
