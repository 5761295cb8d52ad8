"""Database and cache failover, the job queue's dead letters and the artifacts' versions, against moto where it
models the call and a Stubber (botocore's model checks every call's parameters) where it does not."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import aws_testkit as kit
import pytest

from aws_target import faults, probes, recovery
from pynomaly_ops import object_versions
from pynomaly_ops.waiting import Timeout

DB = kit.name("database", "primary")
REDIS = kit.name("cache", "redis")
MARKER = "pynomaly-drill queue-consumer-outage poison"


# --- database failover: RDS Multi-AZ -------------------------------------------------------------------------
def _db(zone: str, status: str = "available", multi_az: bool = True, standby: str | None = None) -> dict:
    db = {"DBInstanceIdentifier": DB, "DBInstanceStatus": status, "MultiAZ": multi_az, "AvailabilityZone": zone}
    return {"DBInstances": [db | ({"SecondaryAvailabilityZone": standby} if standby else {})]}


def test_database_failover_reboots_the_primary_in_moto_which_cannot_fail_over(stack):
    """moto accepts RebootDBInstance with ForceFailover for a Multi-AZ instance and changes nothing: the
    primary stays in its zone, so waiting for a new one times out."""
    fault = faults.kill_database_primary(outputs=stack)
    assert (fault["name"], fault["member"]) == (DB, probes.database_primary(outputs=stack))
    assert probes.database_ready(outputs=stack)
    with pytest.raises(Timeout, match=f"the database primary out of {fault['member']} not ready"):
        probes.wait_for_new_database_primary(fault["member"], timeout_s=0.05, outputs=stack)


def test_database_failover_moto_cannot_fail_over_so_the_reboot_and_the_zones_are_stubbed(stack, stub):
    rds = stub("rds")
    by_id = {"DBInstanceIdentifier": DB}
    rds.add_response("describe_db_instances", _db("eu-west-1a", standby="eu-west-1b"), by_id)
    rds.add_response(
        "reboot_db_instance", {"DBInstance": {"DBInstanceIdentifier": DB}}, by_id | {"ForceFailover": True}
    )
    rds.add_response("describe_db_instances", _db("eu-west-1a", "rebooting"), by_id)
    rds.add_response("describe_db_instances", _db("eu-west-1b", "rebooting"), by_id)
    rds.add_response("describe_db_instances", _db("eu-west-1b", "rebooting"), by_id)
    rds.add_response("describe_db_instances", _db("eu-west-1b", standby="eu-west-1a"), by_id)

    fault = faults.kill_database_primary(outputs=stack)
    assert (fault["member"], fault["standby"]) == ("eu-west-1a", "eu-west-1b")
    new = probes.wait_for_new_database_primary(fault["member"], since=fault["time"], outputs=stack)
    assert (new["leader"], new["old"]) == ("eu-west-1b", "eu-west-1a")
    ready = probes.wait_for_database_ready(since=fault["time"], outputs=stack)
    assert (ready["leader"], ready["standby"]) == ("eu-west-1b", "eu-west-1a") and ready["seconds"] >= new["seconds"]


@pytest.mark.parametrize(
    ("described", "message"),
    [(_db("eu-west-1a", multi_az=False), "not Multi-AZ"), (_db("eu-west-1a", "modifying"), "is modifying")],
)
def test_a_database_that_cannot_fail_over_is_refused(stack, stub, described, message):
    stub("rds").add_response("describe_db_instances", described, {"DBInstanceIdentifier": DB})
    with pytest.raises(faults.FaultError, match=message):
        faults.kill_database_primary(outputs=stack)


# --- cache failover: ElastiCache -------------------------------------------------------------------------------
def _group(primary: str, failover: str = "enabled") -> dict:
    members = [
        {"CacheClusterId": f"{REDIS}-00{i}", "CurrentRole": "primary" if f"{REDIS}-00{i}" == primary else "replica"}
        for i in (1, 2)
    ]
    node_group = {"NodeGroupId": "0001", "NodeGroupMembers": members}
    return {
        "ReplicationGroups": [{"ReplicationGroupId": REDIS, "AutomaticFailover": failover, "NodeGroups": [node_group]}]
    }


def test_the_cache_primary_is_read_from_moto(stack):
    assert probes.redis_primary(outputs=stack) == f"{REDIS}-001"


def test_cache_failover_moto_cannot_test_failover_so_the_call_is_asserted(stack, stub):
    elasticache, by_id = stub("elasticache"), {"ReplicationGroupId": REDIS}
    elasticache.add_response("describe_replication_groups", _group(f"{REDIS}-001"), by_id)
    elasticache.add_response("test_failover", {}, by_id | {"NodeGroupId": "0001"})
    for primary in (f"{REDIS}-001", f"{REDIS}-002"):
        elasticache.add_response("describe_replication_groups", _group(primary), by_id)

    fault = faults.freeze_redis_primary(outputs=stack)
    assert (fault["primary"], fault["node_group"]) == (f"{REDIS}-001", "0001")
    new = probes.wait_for_new_redis_primary(fault["primary"], since=fault["time"], outputs=stack)
    assert (new["primary"], new["old"]) == (f"{REDIS}-002", f"{REDIS}-001")
    assert faults.resume_frozen(outputs=stack)["resumed"] == []


def test_a_cache_without_automatic_failover_is_refused(stack, stub):
    stub("elasticache").add_response(
        "describe_replication_groups", _group(f"{REDIS}-001", "disabled"), {"ReplicationGroupId": REDIS}
    )
    with pytest.raises(faults.FaultError, match="no automatic failover"):
        faults.freeze_redis_primary(outputs=stack)


# --- the job queue: a poison message dead-lettered by the redrive policy -------------------------------------------
def test_a_poison_message_is_dead_lettered_and_only_the_drills_are_removed(stack):
    outputs = json.loads(Path(stack).read_text())
    sqs = kit.client("sqs")
    sqs.send_message(QueueUrl=outputs["dead_letter_queue_url"], MessageBody="someone else's dead letter")
    sent = faults.send_poison_message(MARKER, outputs=stack)
    assert probes.wait_for_queue_depth("jobs", 1, outputs=stack)["visible"] == 1
    for _ in range(2):  # a worker hands it back at once; the second receive is past maxReceiveCount (1)
        sqs.receive_message(QueueUrl=outputs["queue_url"], VisibilityTimeout=0)
    dead = probes.wait_for_queue_depth("dead_letters", 2, since=sent["time"], outputs=stack)
    assert dead["visible"] == 2 and probes.queue_depths(outputs=stack)["jobs"] == {"visible": 0, "in_flight": 0}

    assert faults.remove_dead_letters(MARKER, outputs=stack)["deleted"] == 1
    assert faults.remove_dead_letters(MARKER, outputs=stack)["deleted"] == 0  # idempotent: a rollback
    left = sqs.receive_message(QueueUrl=outputs["dead_letter_queue_url"])["Messages"]
    assert [m["Body"] for m in left] == ["someone else's dead letter"]


# --- the artifacts bucket's versions: corruption and restore --------------------------------------------------------
def test_corrupted_objects_are_restored_from_their_versions(stack):
    seeded = recovery.seed_objects(6, outputs=stack)
    fault = faults.corrupt_objects(seeded["prefix"], outputs=stack)
    assert (fault["deleted"], fault["overwritten"]) == (3, 3)
    assert recovery.verify_objects(seeded["expected"], outputs=stack)["figures"] == {
        "objects differing from their last good version": 6
    }
    restored = recovery.restore_objects(seeded["prefix"], fault["time"], outputs=stack)
    assert restored["figures"] == {"objects restored": 6, "objects without a good version": 0}
    assert recovery.restore_objects(seeded["prefix"], fault["time"], outputs=stack)["restored"] == []  # idempotent
    verified = recovery.verify_objects(seeded["expected"], outputs=stack)
    assert verified["differing"] == []
    bucket = json.loads(Path(stack).read_text())["artifacts_bucket"]
    key = sorted(seeded["expected"])[1]
    body = kit.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == seeded["expected"][key]
    assert recovery.remove_drill_objects(outputs=stack)["versions_removed"] == 6 + 6 + 6  # seeded, broken, restored
    assert recovery.remove_drill_objects(outputs=stack)["versions_removed"] == 0


def test_only_the_drills_objects_can_be_corrupted(stack):
    with pytest.raises(faults.FaultError, match="only the drill's objects"):
        faults.corrupt_objects("results/", outputs=stack)
    with pytest.raises(faults.FaultError, match="no objects under"):
        faults.corrupt_objects(f"{object_versions.DRILL_OBJECTS}none/", outputs=stack)


def test_an_object_without_a_version_before_the_fault_is_named_unrecoverable(stack):
    """Only a version older than the fault's time is good: objects written after it have none."""
    seeded = recovery.seed_objects(2, outputs=stack)
    restored = recovery.restore_objects(seeded["prefix"], datetime(2000, 1, 1, tzinfo=UTC).timestamp(), outputs=stack)
    assert restored["figures"] == {"objects restored": 0, "objects without a good version": 2}
