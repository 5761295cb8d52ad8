"""Queue, storage, keys and backup tiers."""

from __future__ import annotations

import json

from infra_helpers import inputs, policy, statements

from pynomaly_cli.offline import ACCOUNT

BUCKETS = ("storage-artifacts", "storage-backups", "lb-access-logs")
KEY_PURPOSES = {"logs", "storage", "database", "cache", "queue", "alarms", "backup", "cluster"}


def test_job_queue_redrives_to_the_dlq_after_five_receives(r, stack, cfg):
    jobs = inputs(r, f"{stack}-queue-jobs")
    redrive = json.loads(jobs["redrivePolicy"])
    assert redrive["maxReceiveCount"] == cfg.queue.max_receive_count == 5
    assert redrive["deadLetterTargetArn"] == r.named(f"{stack}-queue-jobs-dlq").state["arn"]


def test_queues_are_kms_encrypted_with_long_polling(r, stack, cfg):
    key = r.named(f"{stack}-keys-queue").state["arn"]
    jobs, dlq = inputs(r, f"{stack}-queue-jobs"), inputs(r, f"{stack}-queue-jobs-dlq")
    assert jobs["kmsMasterKeyId"] == dlq["kmsMasterKeyId"] == key
    assert jobs["receiveWaitTimeSeconds"] == cfg.queue.receive_wait_s > 0
    assert jobs["visibilityTimeoutSeconds"] == cfg.queue.visibility_timeout_s


def test_queues_refuse_requests_without_tls(r, stack):
    for role in ("jobs", "jobs-dlq"):
        queue = r.named(f"{stack}-queue-{role}").state
        tls = inputs(r, f"{stack}-queue-{role}-tls-only")
        assert tls["queueUrl"] == queue["url"]
        (deny,) = statements(policy(tls))
        assert deny["Effect"] == "Deny" and deny["Principal"] == "*" and deny["Action"] == "sqs:*"
        assert deny["Resource"] == [queue["arn"]]
        assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_buckets_are_versioned_private_owner_enforced_and_tls_only(r, stack):
    for role in BUCKETS:
        name = f"{stack}-{role}"
        bucket_id = f"{name}-id"
        assert inputs(r, f"{name}-versioning")["versioningConfiguration"]["status"] == "Enabled"
        block = inputs(r, f"{name}-public-access-block")
        assert block["bucket"] == bucket_id
        for flag in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"):
            assert block[flag] is True, (name, flag)
        assert inputs(r, f"{name}-ownership")["rule"]["objectOwnership"] == "BucketOwnerEnforced"
        arn = r.named(name).state["arn"]
        denies = [s for s in statements(policy(inputs(r, f"{name}-policy"))) if s["Effect"] == "Deny"]
        assert any(
            s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} and set(s["Resource"]) == {arn, f"{arn}/*"}
            for s in denies
        ), name


def test_data_buckets_use_sse_kms_and_expire_noncurrent_versions(r, stack, cfg):
    key = r.named(f"{stack}-keys-storage").state["arn"]
    for role in ("storage-artifacts", "storage-backups"):
        (rule,) = inputs(r, f"{stack}-{role}-encryption")["rules"]
        assert rule["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": key}
    for role in BUCKETS:
        (rule,) = inputs(r, f"{stack}-{role}-lifecycle")["rules"]
        assert rule["status"] == "Enabled"
        assert rule["noncurrentVersionExpiration"]["noncurrentDays"] == cfg.storage.noncurrent_version_days
    (logs_rule,) = inputs(r, f"{stack}-lb-access-logs-lifecycle")["rules"]
    assert logs_rule["expiration"]["days"] == cfg.lb.access_log_retention_days


def test_kms_keys_rotate_one_per_purpose(r, stack):
    keys = r.of_type("aws:kms/key:Key")
    assert {k.name.removeprefix(f"{stack}-keys-") for k in keys} == KEY_PURPOSES
    assert all(k.plain_inputs["enableKeyRotation"] is True for k in keys)
    aliases = {a.plain_inputs["name"] for a in r.of_type("aws:kms/alias:Alias")}
    assert aliases == {f"alias/{stack}-keys-{p}" for p in KEY_PURPOSES}


def test_key_policies_grant_services_that_encrypt_for_us(r, stack):
    def services(purpose):
        doc = policy(inputs(r, f"{stack}-keys-{purpose}"))
        return {s["Principal"].get("Service") for s in statements(doc)} - {None}

    assert services("alarms") == {"cloudwatch.amazonaws.com"}  # alarms publish to encrypted topics
    assert services("logs") == {"logs.us-east-1.amazonaws.com"}
    assert services("database") == set()
    topics = [inputs(r, f"{stack}-alarms-{sev}") for sev in ("warning", "critical")]
    assert all(t["kmsMasterKeyId"] == r.named(f"{stack}-keys-alarms").state["arn"] for t in topics)


def test_every_service_grant_in_a_key_policy_is_confined_to_this_account(r):
    """The confused-deputy guard: a service principal may use a key only for this account's resources
    (aws:SourceAccount, or an encryption context naming this account's log groups)."""
    account = ACCOUNT
    grants = [
        (key.name, s)
        for key in r.of_type("aws:kms/key:Key")
        for s in statements(policy(key.plain_inputs))
        if s["Effect"] == "Allow" and "Service" in s["Principal"]
    ]
    assert len(grants) >= 2
    for name, s in grants:
        condition = s.get("Condition", {})
        scoped = condition.get("StringEquals", {}).get("aws:SourceAccount") == account or any(
            f":{account}:" in str(v) for v in condition.get("ArnLike", {}).values()
        )
        assert scoped, (name, s)
        if "aws:SourceArn" in condition.get("ArnLike", {}):
            assert condition["ArnLike"]["aws:SourceArn"].startswith(f"arn:aws:cloudwatch:us-east-1:{account}:alarm:")


def test_backup_plan_covers_database_and_buckets_in_prod_only(r, stack, cfg):
    vaults = r.of_type("aws:backup/vault:Vault")
    assert bool(vaults) is cfg.backup.enabled
    assert (stack == "prod") is cfg.backup.enabled
    if not vaults:
        assert not r.of_type("aws:backup/plan:Plan")
        return
    assert vaults[0].plain_inputs["kmsKeyArn"] == r.named(f"{stack}-keys-backup").state["arn"]
    (plan,) = r.of_type("aws:backup/plan:Plan")
    (rule,) = plan.plain_inputs["rules"]
    assert rule["schedule"].startswith("cron(0 ") and rule["schedule"].endswith(" * * ? *)")  # daily
    assert rule["lifecycle"]["deleteAfter"] == cfg.backup.retention_days
    assert rule["targetVaultName"] == vaults[0].state["name"]
    (selection,) = r.of_type("aws:backup/selection:Selection")
    covered = set(selection.plain_inputs["resources"])
    assert covered == {
        r.named(f"{stack}-database-primary").state["arn"],
        r.named(f"{stack}-storage-artifacts").state["arn"],
        r.named(f"{stack}-storage-backups").state["arn"],
    }
