"""The local stack against its requirements, on one real stack per session.

The faults and the observations go through the fault library (local.faults, local.probes,
local.recorders), the same functions the drills call. No test depends on another's order:
`down` is checked when the session's stack is torn down (conftest.py).
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid

import httpx
import psycopg
import pytest
import redis
import yaml
from conftest import RunningStack, api, assert_covers_every_threshold, aws, cli, instances_ready

from local import faults, probes
from local.procs import stack_pids
from local.programs import ETCD_MEMBERS, PATRONI_MEMBERS, PATRONI_TTL_S, START_NOW_FILE, patroni_program
from local.recorders import RequestRecorder, WriteRecorder
from local.waiting import wait_for
from local.wiring import queue_settings
from pynomaly_ops.baselines import load
from pynomaly_ops.outputs import StackOutputs

pytestmark = pytest.mark.integration

B = load()
# Background load through the load balancer while an instance dies or the fleet scales (loopback, bounded).
TRAFFIC_RATE_PER_S = 40


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
    assert printed["db_secret_arn"] is None
    # every catalogue entry for the local Prometheus, by key, under its local name
    assert printed["alarms"]["error_rate.critical"] == {"prometheus": "local-alarms-error-rate-critical"}


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
    assert probes.database_ready(running.state)


def test_redis_endpoints_route_by_role(running: RunningStack):
    for endpoint, role in (
        (running.outputs.redis_primary_endpoint, b"master"),
        (running.outputs.redis_reader_endpoint, b"slave"),
    ):
        host, port = _endpoint(endpoint)
        client = redis.Redis(host=host, port=port, password=running.layout.secrets["redis_password"], socket_timeout=2)
        assert client.role()[0] == role


def test_queues_and_buckets_match_the_pulumi_program(running: RunningStack):
    sqs = aws(running, "sqs")
    attrs = sqs.get_queue_attributes(QueueUrl=running.outputs.queue_url, AttributeNames=["All"])["Attributes"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=running.outputs.dead_letter_queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": queue_settings().max_receive_count}
    assert int(attrs["VisibilityTimeout"]) == queue_settings().visibility_timeout_s
    s3 = aws(running, "s3")
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
    assert {names["prometheus"] for names in running.outputs.alarms.values()} <= loaded


def test_rules_file_contains_every_threshold(running: RunningStack):
    deployed = yaml.safe_load((running.layout.prometheus_dir / "rules.yml").read_text())
    assert_covers_every_threshold(deployed["groups"][0]["rules"])


def test_a_request_through_the_load_balancer_reaches_every_backend(running: RunningStack):
    assert [r["checks"] for r in instances_ready(running)] == [{"database": "ok", "queue": "ok", "cache": "ok"}] * 3
    with api(running) as client:
        body = {"series": [1.0, 1.1, 0.9, 1.0, 1.05, 25.0]}
        first = client.post("/api/v1/detect", json=body)
        assert first.status_code == 200, first.text
        assert first.json()["flags"][-1] is True
        assert client.post("/api/v1/detect", json=body).json()["cached"] is True  # Redis answered
        job = client.post("/api/v1/jobs", json=body | {"job_id": str(uuid.uuid4())}).json()["job"]

        def finished():
            state = client.get(f"/api/v1/jobs/{job['id']}").json()["job"]
            return state if state["status"] in ("completed", "failed") else None

        done = wait_for("the worker to finish the job (queue)", finished, 30, interval_s=0.3)
    assert done["status"] == "completed", done
    result = aws(running, "s3").get_object(Bucket=running.outputs.artifacts_bucket, Key=done["result_key"])
    assert json.loads(result["Body"].read())  # the result landed in S3


def test_maintenance_mode_serves_the_page_and_switches_back(running: RunningStack):
    url = f"{running.outputs.load_balancer_url}/health"
    cli(running.env, "maintenance", "on")
    try:
        page = httpx.get(url, timeout=5)
        assert page.status_code == 503 and probes.MAINTENANCE_MARK in page.text, page.text[:200]
        assert page.headers["retry-after"] == "300"
        assert probes.instance_count(running.state, status="UP") == B.scaling.instances_normal  # fleet untouched
    finally:
        cli(running.env, "maintenance", "off")
    assert httpx.get(url, timeout=5).status_code == 200
    refused = cli(running.env, "maintenance", "sideways", check=False)
    assert refused.returncode != 0 and "on or off" in refused.stderr


# --- failure drills ---------------------------------------------------------------
def test_a_killed_instance_leaves_the_load_balancer_within_3s_and_is_replaced(running: RunningStack):
    victim, state = "api-1", running.state
    with RequestRecorder(f"{running.outputs.load_balancer_url}/health", TRAFFIC_RATE_PER_S) as traffic:
        traffic.wait_for_ok(21, 10)
        killed = faults.kill_process(victim, state_dir=state)
        # Out of the load balancer, or already replaced and passing its checks (supervisord restarts it at once;
        # a replacement up before two checks fail is never marked DOWN): either way it stops failing requests.
        out = probes.wait_for_instance_out_or_replaced(victim, killed["pid"], 3, since=killed["time"], state_dir=state)
        probes.wait_for_process_replaced(victim, killed["pid"], 10, state_dir=state)
        probes.wait_for_instance_status(victim, "UP", 60, interval_s=0.2, state_dir=state)
    summary = traffic.summary()
    print(
        f"\ninstance {'out of the load balancer' if out['out'] else 'replaced'} {out['seconds']:.2f}s after SIGKILL; "
        f"{summary['requests']} requests, "
        f"error rate {summary['error_rate_percent']:.2f} %, longest outage {summary['longest_outage_s']:.2f}s, "
        f"p95 {summary['p95_latency_s'] * 1000:.0f} ms; errors {summary['errors'][:5]}"
    )
    assert out["seconds"] <= 3
    assert summary["error_rate_percent"] <= B.instance_loss_max_error_rate_percent, traffic.failures[:10]


def test_scale_to_high_load_and_back_drops_no_request(running: RunningStack):
    high, normal, state = B.scaling.instances_high_load, B.scaling.instances_normal, running.state
    with RequestRecorder(f"{running.outputs.load_balancer_url}/health", TRAFFIC_RATE_PER_S) as traffic:
        traffic.wait_for_ok(21, 10)
        scaled = faults.scale_instances(high, state_dir=state)
        assert probes.instance_count(state) == high and probes.instance_count(state, status="UP") == high
        zones = [r["zone"] for r in running.stack.status() if r["name"].startswith("api-")]
        assert sorted(set(zones)) == ["a", "b", "c"] and max(map(zones.count, set(zones))) == 2
        cli(running.env, "scale", str(normal))  # back through the command line, so both paths are exercised
    assert probes.instance_count(state) == normal
    requests = traffic.summary()["requests"]
    print(f"\nscaled {scaled['from']} -> {high} in {scaled['seconds']:.1f}s and back; {requests} requests, none failed")
    assert traffic.failures == [], traffic.failures[:10]
    assert traffic.ok_count > 0


def test_killing_the_postgres_primary_fails_over_without_losing_acknowledged_writes(running: RunningStack):
    state = running.state
    probes.wait_for_database_ready(60, state_dir=state)
    with WriteRecorder(running.outputs.db_writer_dsn) as writer:
        writer.wait_for_acknowledged(51, 10)
        killed = faults.kill_database_primary(state)
        new = probes.wait_for_new_database_primary(killed["member"], 30, since=killed["time"], state_dir=state)
        with probes.database_logs_on_timeout(state):  # writes resuming on the new primary
            writer.wait_for_acknowledged(writer.acked_count + 51, 30)
    lost, outage = writer.lost_writes(), writer.outage()
    print(
        f"\nPostgreSQL: new primary {new['leader']} {new['seconds']:.1f}s after SIGKILL of {killed['member']}; "
        f"{writer.acked_count} acked, writes failing for {outage['seconds'] or 0:.1f}s, {len(lost)} lost"
    )
    assert new["seconds"] <= 30
    assert outage["seconds"] is not None and outage["recovered"], f"the kill never reached the writer: {outage}"
    assert len(lost) <= B.recovery.database_failover.acknowledged_writes_lost
    probes.wait_for_database_ready(90, state_dir=state)  # the old primary back as synchronous standby
    writer.drop_table()


def _leader_or_none(state: str) -> str | None:
    try:
        return probes.patroni_leader(state)
    except (probes.ProbeError, ConnectionError):  # no leader, or no Patroni answering: against the primary too
        return None


def test_losing_the_etcd_leader_leaves_the_database_primary_in_place(running: RunningStack):
    """One zone's DCS member gone (frozen, as a lost host is) for twice Patroni's ttl: the other two keep a
    quorum, so the primary keeps its leader key and never demotes, and writes keep being acknowledged."""
    state = running.state
    probes.wait_for_database_ready(90, state_dir=state)
    primary, victim = probes.patroni_leader(state), probes.etcd_leader(state)
    with WriteRecorder(running.outputs.db_writer_dsn) as writer:
        writer.wait_for_acknowledged(51, 10)
        faults.freeze_process(victim, state_dir=state)
        leaders, acked_before = [], writer.acked_count
        try:
            held_until = time.monotonic() + 2 * PATRONI_TTL_S  # the fault's duration, not a wait for state
            while time.monotonic() < held_until:
                leaders.append(_leader_or_none(state))
                time.sleep(0.5)  # the sampling interval
        finally:
            faults.kill_process(victim, state_dir=state)  # supervisord restarts it; it rejoins with its data
    acked_meanwhile = writer.acked_count - acked_before
    print(
        f"\netcd: leader {victim} frozen {2 * PATRONI_TTL_S}s; primary {set(leaders)}; "
        f"{acked_meanwhile} writes acknowledged meanwhile, {len(writer.errors)} errors"
    )
    assert leaders and set(leaders) == {primary}, leaders
    assert acked_meanwhile > 100 and writer.errors == []
    assert writer.lost_writes() == []
    writer.drop_table()
    with probes.database_logs_on_timeout(state):
        wait_for("all three etcd members healthy again", lambda: probes.etcd_healthy(state), 30)


def test_killing_the_redis_primary_fails_over_via_sentinel(running: RunningStack):
    state = running.state
    old, victim = probes.redis_primary(state), probes.redis_primary_program(state)
    # Node loss: frozen first (so the supervisor cannot bring it straight back
    # as if nothing happened), then killed once the Sentinels have moved on.
    frozen = faults.freeze_process(victim, state_dir=state)
    try:
        rto_s = B.recovery.cache_failover.rto_s
        new = probes.wait_for_new_redis_primary(old, rto_s, since=frozen["time"], state_dir=state)
    finally:
        # On every path, failover or not, the frozen node dies and supervisord brings it back:
        # no test after this one inherits a stopped Redis.
        faults.kill_process(victim, state_dir=state)
    # Replicas refuse writes: a write through the endpoint proves it follows the new primary.
    wait_for("the primary endpoint following the new primary", lambda: probes.redis_endpoint_writable(state), 10)
    wait_for("the old primary back as a replica", lambda: probes.redis_role(victim, state) == "slave", 30, 0.5)
    cache_ok = lambda: all(r["checks"]["cache"] == "ok" for r in instances_ready(running))  # noqa: E731
    wait_for("the service's cache healthy", cache_ok, 20)
    print(f"\nRedis: new primary {new['primary']} {new['seconds']:.1f}s after the primary {old} stopped answering")


def test_up_recovers_a_stack_left_by_a_crash(running: RunningStack):
    """supervisord killed (its children orphaned, pid files and sockets stale)
    and a Patroni member dead: the next `up` clears the orphans and restarts all."""
    stack, state = running.stack, running.state
    member = next(m for m in PATRONI_MEMBERS if m != probes.patroni_leader(state))
    # Read before supervisord dies (its RPC goes with it), killed after (so it restarts nothing).
    member_pids = [probes.process_pid(patroni_program(member), state), probes.postmaster_pid(member, state)]
    faults.kill_supervisord(state)
    for pid in member_pids:
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
    assert not stack.supervisor.running() and stack_pids(running.layout)  # orphans left behind
    result = cli(running.env, "up")
    assert "left by a crashed run" in result.stderr
    assert [r["name"] for r in running.stack.status() if not r["healthy"]] == []
    assert probes.database_ready(state)
