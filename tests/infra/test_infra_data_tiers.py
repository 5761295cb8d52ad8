"""Database and cache tiers: RDS and ElastiCache settings, and who may reach them."""

from __future__ import annotations

from infra_helpers import inputs, one, rid


def _cluster_security_groups(r) -> set[str]:
    components = r.of_type("pynomaly:cluster:Cluster")
    if not components:
        return set()
    return {rid(x.name) for x in r.children(components[0].urn) if x.type == "aws:ec2/securityGroup:SecurityGroup"}


def _assert_reachable_only_from_app_and_cluster(r, stack, sg_name: str, port: int):
    sg = inputs(r, sg_name)
    (rule,) = sg["ingress"]
    assert rule["fromPort"] == rule["toPort"] == port
    assert not rule.get("cidrBlocks") and not rule.get("ipv6CidrBlocks")
    sources = set(rule["securityGroups"])
    assert rid(f"{stack}-network-app-sg") in sources
    cluster = _cluster_security_groups(r)
    others = sources - {rid(f"{stack}-network-app-sg")}
    assert others <= cluster
    assert len(others) == (1 if cluster else 0)
    assert not sg.get("egress")


# ---------------------------------------------------------------- database


def test_rds_postgres_multi_az_encrypted_gp3_with_storage_autoscaling(r, stack, cfg):
    db = inputs(r, f"{stack}-database-primary")
    assert db["engine"] == "postgres" and db["engineVersion"] == cfg.db.engine_version
    assert db["multiAz"] is True
    assert db["storageEncrypted"] is True
    assert db["kmsKeyId"] == r.named(f"{stack}-keys-database").state["arn"]
    assert db["storageType"] == "gp3"
    assert db["allocatedStorage"] == cfg.db.allocated_storage_gb
    assert db["maxAllocatedStorage"] == cfg.db.max_allocated_storage_gb > db["allocatedStorage"]
    assert db["publiclyAccessible"] is False
    assert db["dbSubnetGroupName"] == f"{stack}-database-subnets"
    subnets = inputs(r, f"{stack}-database-subnets")["subnetIds"]
    assert subnets == [rid(f"{stack}-network-data-{i}") for i in range(3)]


def test_master_password_is_managed_by_secrets_manager(r, stack):
    db = inputs(r, f"{stack}-database-primary")
    assert db["manageMasterUserPassword"] is True
    assert "password" not in db and "passwordWo" not in db
    assert db["masterUserSecretKmsKeyId"] == r.named(f"{stack}-keys-database").state["arn"]


def test_backups_pitr_deletion_protection_and_final_snapshot(r, stack, cfg):
    db = inputs(r, f"{stack}-database-primary")
    assert db["backupRetentionPeriod"] == cfg.db.backup_retention_days >= 7
    assert db["deletionProtection"] is cfg.db.deletion_protection
    assert db["skipFinalSnapshot"] is False and db["finalSnapshotIdentifier"]
    if stack == "prod":
        assert db["backupRetentionPeriod"] == 35
        assert db["deletionProtection"] is True


def test_observability_and_iam_auth(r, stack, cfg):
    db = inputs(r, f"{stack}-database-primary")
    assert db["performanceInsightsEnabled"] is True
    assert db["monitoringInterval"] == cfg.db.monitoring_interval_s > 0
    assert db["monitoringRoleArn"] == r.named(f"{stack}-database-monitoring-role").state["arn"]
    assert db["iamDatabaseAuthenticationEnabled"] is True
    assert set(db["enabledCloudwatchLogsExports"]) >= {"postgresql", "upgrade"}


def test_parameter_group_carries_the_runbook_tuning(r, stack, cfg, numbers):
    group = inputs(r, f"{stack}-database-params")
    assert group["family"] == f"postgres{cfg.db.engine_version.split('.')[0]}"
    params = {p["name"]: p["value"] for p in group["parameters"]}
    tuning = numbers.database
    assert params["max_connections"] == str(tuning.max_connections)
    # shared_buffers and effective_cache_size are counted in 8 kB pages.
    assert int(params["shared_buffers"]) * 8 == tuning.shared_buffers_mb * 1024
    assert int(params["effective_cache_size"]) * 8 == tuning.effective_cache_size_mb * 1024
    assert "pg_stat_statements" in params["shared_preload_libraries"]
    assert params["rds.force_ssl"] == "1"
    assert inputs(r, f"{stack}-database-primary")["parameterGroupName"] == f"{stack}-database-params"


def test_read_replica_only_where_the_stack_asks(r, stack, cfg):
    replicas = [x for x in r.of_type("aws:rds/instance:Instance") if x.plain_inputs.get("replicateSourceDb")]
    assert len(replicas) == (1 if cfg.db.read_replica else 0)
    if stack == "prod":
        assert len(replicas) == 1
    if stack == "dev":
        assert not replicas
    if replicas:
        assert replicas[0].plain_inputs["replicateSourceDb"] == f"{stack}-database-primary"
        assert r.outputs["db_reader_endpoint"] == replicas[0].state["address"]
    else:
        assert r.outputs["db_reader_endpoint"] == r.outputs["db_writer_endpoint"]


def test_database_reachable_only_from_app_and_cluster(r, stack):
    _assert_reachable_only_from_app_and_cluster(r, stack, f"{stack}-database-sg", 5432)
    assert inputs(r, f"{stack}-database-primary")["vpcSecurityGroupIds"] == [rid(f"{stack}-database-sg")]


# ---------------------------------------------------------------- cache


def test_redis_replication_group_fails_over_across_azs(r, stack, cfg):
    redis = one(r, "aws:elasticache/replicationGroup:ReplicationGroup").plain_inputs
    assert redis["engine"] == "redis"
    assert redis["numCacheClusters"] == 1 + cfg.cache.replicas >= 2
    assert redis["automaticFailoverEnabled"] is True and redis["multiAzEnabled"] is True
    azs = redis["preferredCacheClusterAzs"]
    assert len(set(azs)) == min(len(azs), 3)
    assert redis["snapshotRetentionLimit"] == cfg.cache.snapshot_retention_days > 0
    assert inputs(r, f"{stack}-cache-subnets")["subnetIds"] == [rid(f"{stack}-network-data-{i}") for i in range(3)]


def test_redis_is_encrypted_and_requires_a_secret_auth_token(r, stack):
    redis = one(r, "aws:elasticache/replicationGroup:ReplicationGroup")
    i = redis.plain_inputs
    assert i["atRestEncryptionEnabled"] is True and i["transitEncryptionEnabled"] is True
    assert i["kmsKeyId"] == r.named(f"{stack}-keys-cache").state["arn"]
    assert set(redis.inputs["authToken"]) == {"$secret"}
    token = inputs(r, f"{stack}-cache-auth-token")
    assert token["length"] >= 16
    assert not set(token["overrideSpecial"]) & set(' "/@')  # characters ElastiCache refuses


def test_cache_reachable_only_from_app_and_cluster(r, stack):
    _assert_reachable_only_from_app_and_cluster(r, stack, f"{stack}-cache-sg", 6379)
    redis = one(r, "aws:elasticache/replicationGroup:ReplicationGroup").plain_inputs
    assert redis["securityGroupIds"] == [rid(f"{stack}-cache-sg")]


def test_without_a_cluster_only_the_app_reaches_database_and_cache(dev_variant):
    assert not dev_variant.of_type("pynomaly:cluster:Cluster")
    for tier, port in (("database", 5432), ("cache", 6379)):
        (rule,) = inputs(dev_variant, f"dev-{tier}-sg")["ingress"]
        assert rule["securityGroups"] == [rid("dev-network-app-sg")]
        assert rule["fromPort"] == port
