"""The Pynomaly platform: read the stack's settings, wire the tiers, export outputs."""

import pulumi
import pulumi_aws as aws

from infra import node_capacity, stack_config
from infra.alarms import Alarms, AlarmsArgs, Watched
from infra.app_fleet import AppFleet, AppFleetArgs
from infra.cache import Cache, CacheArgs
from infra.cluster import Cluster, ClusterArgs
from infra.cluster_addons import ClusterAddons, ClusterAddonsArgs, autoscaler_release
from infra.dashboard import Dashboard, DashboardArgs
from infra.database import Database, DatabaseArgs
from infra.fault_injection import FIS_USER, FaultInjection, FaultInjectionArgs, Nodes, Pods, Targets
from infra.keys import Backups, BackupsArgs, Keys, KeysArgs
from infra.load_balancer import LoadBalancer, LoadBalancerArgs, WafLimits
from infra.load_generators import LoadGenerators, LoadGeneratorsArgs, image
from infra.network import Network, NetworkArgs
from infra.queues import QueueTier, QueueTierArgs
from infra.service_env import Coordinates
from infra.storage import Storage, StorageArgs
from infra.workload import Workload, WorkloadArgs
from pynomaly_ops import baselines as numbers
from pynomaly_ops import outputs as keys
from pynomaly_ops.alarms import Target
from pynomaly_ops.naming import queue_names

settings = stack_config.from_pulumi()
baselines = numbers.load()
# Checked before any resource is declared: `pulumi up` creates resources as they are declared.
autoscaler = (
    autoscaler_release(settings.cluster.version)
    if settings.cluster.declares_kubernetes and settings.cluster.node_autoscaler
    else None
)
node_capacity.check(settings, baselines)  # nodes enough for the HPA's range (and the idle colour)
stack, tags, region = settings.stack, settings.tags, settings.region
account_id = aws.get_caller_identity_output().account_id

kms = Keys(stack, tags, KeysArgs(account_id, region))
network = Network(stack, tags, NetworkArgs(settings.network, region, kms.arn("logs"), settings.fleet.app_port))
# Both ALBs' web ACLs: per client address (the setting; not the VPC's own) and per API key (the numbers file).
waf = WafLimits.of(settings.lb.waf_rate_limit, baselines, stack, network.nat_addresses_arn)
storage = Storage(stack, tags, StorageArgs(settings.storage, account_id, kms.arn("storage")))
queues = QueueTier(stack, tags, QueueTierArgs(settings.queue, kms.arn("queue")))
lb = LoadBalancer(
    stack,
    tags,
    LoadBalancerArgs(
        settings=settings.lb,
        vpc_id=network.vpc_id,
        security_group_id=network.alb_security_group_id,
        public_subnet_ids=network.public_subnet_ids,
        app_port=settings.fleet.app_port,
        account_id=account_id,
        noncurrent_version_days=settings.storage.noncurrent_version_days,
        waf=waf,
    ),
)

# --- cluster and workload (infra/cluster.py, infra/workload.py) ---
# The cluster comes before the database and cache, which admit its nodes.
cluster: Cluster | None = None
if settings.cluster.enabled:
    cluster = Cluster(
        stack,
        tags,
        ClusterArgs(
            settings=settings.cluster,
            vpc_id=network.vpc_id,
            private_subnet_ids=network.app_subnet_ids,
            secrets_kms_key_arn=kms.arn("cluster"),
            logs_kms_key_arn=kms.arn("logs"),
        ),
    )
data_clients = [network.app_security_group_id, *([cluster.security_group_id] if cluster else [])]
# --- (the add-ons and the workload follow the data tiers, below) ---

database = Database(
    stack,
    tags,
    DatabaseArgs(
        settings=settings.db,
        tuning=baselines.database,
        network=network,
        data_subnet_ids=network.data_subnet_ids,
        allowed_security_group_ids=data_clients,
        kms_key_arn=kms.arn("database"),
    ),
)
cache = Cache(
    stack,
    tags,
    CacheArgs(
        settings=settings.cache,
        network=network,
        data_subnet_ids=network.data_subnet_ids,
        availability_zones=network.availability_zones,
        allowed_security_group_ids=data_clients,
        kms_key_arn=kms.arn("cache"),
        logs_kms_key_arn=kms.arn("logs"),
    ),
)
# Where the service (on the instances and in the pods) finds the data tiers.
coordinates = Coordinates(
    db_endpoint=database.writer_endpoint,
    db_name=database.db_name,
    redis_endpoint=cache.primary_endpoint,
    queue_url=queues.queue_url,
    artifacts_bucket=storage.artifacts_bucket,
)
fleet = AppFleet(
    stack,
    tags,
    AppFleetArgs(
        settings=settings.fleet,
        scaling=baselines.scaling,
        app_subnet_ids=network.app_subnet_ids,
        security_group_id=network.app_security_group_id,
        target_group_arn=lb.target_group_arn,
        region=region,
        account_id=account_id,
        queue_arn=queues.queue_arn,
        bucket_arns=[storage.artifacts_bucket_arn],  # the backups bucket holds database dumps: not the app's
        db_secret_arn=database.secret_arn,
        db_resource_id=database.resource_id,
        db_username=database.username,
        redis_auth_secret_arn=cache.auth_secret_arn,
        kms_key_arns=[kms.arn("queue"), kms.arn("storage"), kms.arn("database"), kms.arn("cache")],
        logs_kms_key_arn=kms.arn("logs"),
        coordinates=coordinates,
    ),
)
if settings.backup.enabled:
    Backups(
        stack,
        tags,
        BackupsArgs(
            settings=settings.backup,
            kms_key_arn=kms.arn("backup"),
            resource_arns=[database.primary_arn, storage.artifacts_bucket_arn, storage.backups_bucket_arn],
        ),
    )

jobs_queue, dead_letter_queue = queue_names(stack)
alarms = Alarms(
    stack,
    tags,
    AlarmsArgs(
        settings=settings.alarms,
        baselines=baselines,
        watched=Watched(
            stack=stack,
            asg_name=fleet.asg_name,
            alb_arn_suffix=lb.arn_suffix,
            target_group_arn_suffix=lb.target_group_arn_suffix,
            db_primary_id=database.primary_identifier,
            db_replica_id=database.replica_identifier,
            db_allocated_storage_gb=database.allocated_storage_gb,
            redis_member_ids=cache.member_cluster_ids,
            queue_name=jobs_queue,
            dead_letter_queue_name=dead_letter_queue,
            maintenance_mode=settings.lb.maintenance_mode,
        ),
        kms_key_arn=kms.arn("alarms"),
        # The workload's PrometheusRule, where the cluster runs the Prometheus operator.
        other_targets=frozenset({Target.KUBERNETES})
        if settings.cluster.declares_kubernetes and settings.workload.prometheus_operator
        else frozenset(),
    ),
)
Dashboard(stack, tags, DashboardArgs(region=region, specs=alarms.specs))
# --- cluster and workload (infra/cluster.py, infra/workload.py) ---
if cluster is not None:
    pulumi.export(keys.CLUSTER_NAME, cluster.name)
workload: Workload | None = None
if cluster is not None and settings.cluster.declares_kubernetes:
    # The Load Balancer Controller (the Ingress's ALB) and the Cluster Autoscaler (nodes for the HPA's range).
    cluster_addons = ClusterAddons(
        stack,
        tags,
        ClusterAddonsArgs(
            settings=settings.cluster,
            provider=cluster.provider,
            cluster_name=cluster.name,
            oidc_provider_arn=cluster.oidc_provider_arn,
            oidc_provider_url=cluster.oidc_provider_url,
            vpc_id=network.vpc_id,
            region=region,
            account_id=account_id,
            autoscaler=autoscaler,
        ),
    )
    workload = Workload(
        stack,
        tags,
        WorkloadArgs(
            settings=settings.workload,
            provider=cluster.provider,
            region=region,
            vpc_cidr=settings.network.cidr,
            app_port=settings.fleet.app_port,
            certificate_arn=settings.lb.certificate_arn,
            ssl_policy=settings.lb.ssl_policy,
            load_balancer_deletion_protection=settings.lb.deletion_protection,
            postgres_version=settings.db.engine_version,
            coordinates=coordinates,
            db_secret_arn=database.secret_arn,
            redis_auth_secret_arn=cache.auth_secret_arn,
            redis_kms_key_arn=kms.arn("cache"),
            queue_arn=queues.queue_arn,
            artifacts_bucket_arn=storage.artifacts_bucket_arn,
            backups_bucket=storage.backups_bucket,
            backups_bucket_arn=storage.backups_bucket_arn,
            kms_key_arns=[kms.arn("queue"), kms.arn("storage"), kms.arn("database")],
            oidc_provider_arn=cluster.oidc_provider_arn,
            oidc_provider_url=cluster.oidc_provider_url,
            public_subnet_ids=network.public_subnet_ids,
            public_subnet_cidrs=network.public_subnet_cidrs,
            data_subnet_cidrs=network.data_subnet_cidrs,
            waf=waf,
            ingress_controller=cluster_addons.load_balancer_controller,
            fis_user=FIS_USER if settings.fis.enabled else None,
        ),
    )
    pulumi.export(keys.WORKLOAD_NAMESPACE, workload.namespace)
    if settings.loadgen.enabled:
        # Locust on the cluster for `pynomaly-ops load run --stack NAME --remote` (infra/load_generators.py).
        load_generators = LoadGenerators(
            stack,
            tags,
            LoadGeneratorsArgs(
                settings=settings.loadgen,
                provider=cluster.provider,
                image=image(settings.workload, settings.loadgen),
                target_url=lb.url,
            ),
        )
        pulumi.export(keys.LOAD_GENERATORS_NAMESPACE, load_generators.namespace)
# --- end cluster and workload ---

if settings.fis.enabled:
    # AWS FIS experiment templates for the monthly drills, stopping on catalogue alarms (infra/fault_injection.py);
    # after the workload, whose API pods pod-loss deletes.
    pods = (
        Pods(cluster, workload.namespace, workload.active_selector, workload.fis_service_account)
        if cluster is not None and workload is not None and workload.fis_service_account is not None
        else None
    )
    fis = FaultInjection(
        stack,
        tags,
        FaultInjectionArgs(
            settings=settings.fis,
            baselines=baselines,
            targets=Targets(
                asg_name=fleet.asg_name,
                db_instance_arn=database.primary_arn,
                replication_group_id=cache.replication_group_id,
                zone_ids=network.availability_zone_ids,
                nodes=Nodes(cluster, settings.cluster.node_min) if cluster else None,
                pods=pods,
            ),
            alarm_arns=alarms.arns,
            region=region,
            account_id=account_id,
            logs_kms_key_arn=kms.arn("logs"),
        ),
    )
    pulumi.export(keys.FIS_EXPERIMENT_TEMPLATES, fis.template_ids)

pulumi.export(keys.LOAD_BALANCER_URL, lb.url)
pulumi.export(keys.DB_WRITER_ENDPOINT, database.writer_endpoint)
pulumi.export(keys.DB_READER_ENDPOINT, database.reader_endpoint)
pulumi.export(keys.DB_SECRET_ARN, database.secret_arn)
pulumi.export(keys.REDIS_PRIMARY_ENDPOINT, cache.primary_endpoint)
pulumi.export(keys.REDIS_READER_ENDPOINT, cache.reader_endpoint)
pulumi.export(keys.REDIS_AUTH_SECRET_ARN, cache.auth_secret_arn)
pulumi.export(keys.QUEUE_URL, queues.queue_url)
pulumi.export(keys.DEAD_LETTER_QUEUE_URL, queues.dead_letter_queue_url)
pulumi.export(keys.ARTIFACTS_BUCKET, storage.artifacts_bucket)
pulumi.export(keys.BACKUPS_BUCKET, storage.backups_bucket)
pulumi.export(keys.ASG_NAME, fleet.asg_name)
pulumi.export(keys.AVAILABILITY_ZONES, network.availability_zones)
pulumi.export(keys.AVAILABILITY_ZONE_IDS, network.availability_zone_ids)
pulumi.export(keys.ALARM_TOPIC_ARNS, alarms.topic_arns)
pulumi.export(keys.ALARMS, alarms.alarms)
# What the AWS fault library (aws_target/) acts on.
pulumi.export(keys.REGION, region)
pulumi.export(keys.DB_PRIMARY_IDENTIFIER, database.primary_identifier)
pulumi.export(keys.REDIS_REPLICATION_GROUP_ID, cache.replication_group_id)
pulumi.export(keys.HTTPS_LISTENER_ARN, lb.https_listener_arn)
