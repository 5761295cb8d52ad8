"""Workload tier: the Pynomaly API and worker on EKS, declared with pulumi-kubernetes.

Blue-green: two API Deployments, ``pynomaly-blue`` and ``pynomaly-green``; the
Service ``pynomaly`` (behind the Ingress) selects ``workload.active_color``,
which also gets the HPA and the runbook's minimum of pods, while the idle
colour runs ``workload.idle_replicas`` (0 = scaled to zero). Each colour also
has its own ClusterIP Service (``pynomaly-blue`` / ``pynomaly-green``) for
smoke tests before a switch. Switching is
``pulumi config set workload.active_color green && pulumi up``.

Replica counts are not part of the Deployments: a scale patch per colour
(``DeploymentPatch``) sets them, and changes only when the colour's role does.
So a `pulumi up` that rolls out a new image leaves the HPA's count alone
(no drop to the minimum in the middle of a peak), and a switch runs in order:
the new colour is scaled up and ready, then the Service moves, then the old
colour is scaled down.

Every object goes through the cluster's explicit provider. No secret value
is in the state or a manifest: pods read the DB password and the Redis AUTH
token from Secrets Manager with their IRSA role (infra/pod_scripts/db_credentials.py).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra import alert_rules, pod_specs
from infra import network_policies as netpol
from infra.irsa import ROLE_ARN_ANNOTATION, allow, service_account_role
from infra.load_balancer import WafLimits, web_acl
from infra.queues import QUEUE_CLIENT_ACTIONS
from infra.service_env import Coordinates
from infra.tier import Tier, policy_document
from pynomaly_ops import ports
from pynomaly_ops.baselines import Baselines, load
from pynomaly_ops.environment import ENV_NAMES
from pynomaly_ops.settings import Workload as WorkloadSettings

APP = "pynomaly"
COLORS = ("blue", "green")
# Stack name -> namespace suffix; the runbooks' commands use pynomaly-production.
NAMESPACE_SUFFIX = {"prod": "production"}
API_PRESTOP_S = 10  # lets the ALB deregister a pod before it gets SIGTERM
API_TERMINATION_GRACE_S = 60
SKIP_AWAIT = {"pulumi.com/skipAwait": "true"}
# What the Ingress routes (Kubernetes "Prefix" matches whole path elements: /api, /api/v1/..., not /apiary).
PUBLIC_PATHS = (("/api", "Prefix"), ("/health", "Exact"))
# The HPA owns the active colour's spec.replicas once it scales; a scale patch re-applied at a colour switch
# must take the field back from it rather than fail on the server-side-apply conflict.
PATCH_FORCE = {"pulumi.com/patchForce": "true"}
SCRIPTS = Path(__file__).resolve().parent / "pod_scripts"
SCRIPT_FILES = ("db_credentials.py", "upload_backup.py")
BACKUP_DIR = "/backup"
BACKUP_FILE = f"{BACKUP_DIR}/{APP}.dump"
# The service account AWS FIS's aws:eks:pod actions run as (their kubernetesServiceAccount), and the Role they need,
# as the FIS user guide gives it ("Use the AWS FIS aws:eks:pod actions", configure the Kubernetes service account).
FIS_ACCOUNT = f"{APP}-fis"
FIS_POD_RULES = (
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "list", "get", "delete", "deletecollection"]},
    {"apiGroups": [""], "resources": ["pods/ephemeralcontainers"], "verbs": ["update"]},
    {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
)
RBAC_GROUP = "rbac.authorization.k8s.io"


def namespace_for(stack: str) -> str:
    """``pynomaly-<env>``: prod maps to ``pynomaly-production`` (the runbooks' name), others keep the stack name."""
    return f"{APP}-{NAMESPACE_SUFFIX.get(stack, stack)}"


def deployment_name(color: str) -> str:
    return f"{APP}-{color}"


def api_labels(color: str | None = None) -> dict[str, str]:
    labels = {"app": APP, "component": "api"}
    return labels | ({"color": color} if color else {})


@dataclass(frozen=True)
class WorkloadArgs:
    settings: WorkloadSettings
    provider: k8s.Provider
    region: str
    vpc_cidr: str  # where the worker's metrics scrapers are (Prometheus in the cluster)
    app_port: int
    certificate_arn: str
    ssl_policy: str
    load_balancer_deletion_protection: bool
    postgres_version: str
    coordinates: Coordinates  # the DB writer, Redis primary, queue and bucket, for the service's environment
    db_secret_arn: pulumi.Input[str]
    redis_auth_secret_arn: pulumi.Input[str]
    redis_kms_key_arn: pulumi.Input[str]  # the key encrypting that secret
    queue_arn: pulumi.Input[str]
    artifacts_bucket_arn: pulumi.Input[str]
    backups_bucket: pulumi.Input[str]
    backups_bucket_arn: pulumi.Input[str]
    kms_key_arns: Sequence[pulumi.Input[str]]
    oidc_provider_arn: pulumi.Input[str]
    oidc_provider_url: pulumi.Input[str]
    public_subnet_ids: Sequence[pulumi.Input[str]]  # where the ALB goes (named, so subnets need no discovery tags)
    public_subnet_cidrs: Sequence[str]  # the ALB's addresses: the only peers the API pods admit
    data_subnet_cidrs: Sequence[str]  # the database's and the cache's addresses
    waf: WafLimits  # the Ingress ALB's web ACL, the same rules as the EC2 ALB's
    redis_tls: bool = True
    # The Kubernetes user AWS FIS's experiment role is mapped to (its EKS access entry), where FIS runs the
    # aws:eks:pod actions here (fis.enabled): the service account and Role those actions need are declared for it.
    fis_user: str | None = None
    # The AWS Load Balancer Controller's release, when the stack installs it: the Ingress is created after it
    # (its webhook admits Ingresses) and deleted before it (it removes the ALB and clears the finaliser).
    ingress_controller: pulumi.Resource | None = None
    baselines: Baselines = field(default_factory=load)


def config_hash(data: dict[str, str]) -> str:
    """Pod-template annotation: a changed ConfigMap rolls the Deployments."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _cpu_count(quantity: str) -> int:
    """Whole CPUs in a limit (``2000m`` -> 2): the detector's process count, not the node's CPU count."""
    cores = float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)
    return max(1, math.floor(cores))


class Workload(Tier):
    TIER = "workload"

    namespace: pulumi.Output[str]  # resolves once the Namespace exists
    service_name: pulumi.Output[str]  # the Service behind the Ingress, on the active colour
    active_deployment: pulumi.Output[str]
    active_selector: dict[str, str]  # the labels of the active colour's API pods (the Service's, the PDB's)
    fis_service_account: pulumi.Output[str] | None  # with WorkloadArgs.fis_user: FIS's aws:eks:pod actions run as it

    def __init__(
        self, stack: str, tags: dict[str, str], args: WorkloadArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__(stack, tags, opts)
        self.args = args
        self.s = args.settings
        self.namespace_name = namespace_for(stack)  # known before the Namespace exists: its children name it
        self.k8s = pulumi.ResourceOptions(parent=self, provider=args.provider)
        ns = k8s.core.v1.Namespace(
            self.name_of("namespace"),
            metadata={"name": self.namespace_name, "labels": pod_specs.RESTRICTED_NAMESPACE},
            opts=self.k8s,
        )
        # Everything else lives in the namespace and waits for it.
        self.in_ns = pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=[ns])
        self.api_account = self._service_account(APP, self._api_policy())
        self.backup_account = self._service_account(f"{APP}-backup", self._backup_policy())
        scripts = self._config_map(
            "scripts", f"{APP}-scripts", {name: (SCRIPTS / name).read_text() for name in SCRIPT_FILES}
        )
        env = self._config_map("config", f"{APP}-config", self._environment())
        self.scripts_name, self.env_name = scripts.metadata["name"], env.metadata["name"]
        self.env_hash = env.data.apply(lambda d: config_hash(d or {}))
        active, idle = self.s.active_color, self.s.idle_color
        self.active_selector = api_labels(active)
        deployments = {color: self._api_deployment(color) for color in COLORS}
        self._worker_deployment()
        # A switch in order: the new colour up and ready, then traffic, then the old colour down.
        scaled_up = self._scale(deployments[active], active, self.args.baselines.scaling.pods_min)
        service = self._service(APP, self.active_selector, skip_await=False, after=scaled_up)
        self._scale(deployments[idle], idle, self.s.idle_replicas, service)
        for color in COLORS:
            self._service(deployment_name(color), api_labels(color), skip_await=True)
        self._ingress(service)
        self._hpa(deployments[active], after=scaled_up)
        self._pdb(after=service)
        self._network_policies()
        self._backup_cronjob()
        self.fis_service_account = self._fis_access(args.fis_user) if args.fis_user else None
        if self.s.prometheus_operator:
            self._prometheus_rule()
        self.namespace = ns.metadata["name"]
        self.service_name = service.metadata["name"]
        self.active_deployment = deployments[active].metadata["name"]
        self.register_outputs(
            {
                "namespace": self.namespace,
                "service_name": self.service_name,
                "active_deployment": self.active_deployment,
            }
        )

    # -- identity and configuration ------------------------------------------------------------------------------

    def _api_policy(self) -> pulumi.Output[str]:
        a = self.args
        return policy_document(
            allow(QUEUE_CLIENT_ACTIONS, [a.queue_arn]),
            allow(["s3:ListBucket"], [a.artifacts_bucket_arn]),
            allow(
                ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                [pulumi.Output.concat(a.artifacts_bucket_arn, "/*")],
            ),
            *self._secret_and_keys(),
            # The Redis AUTH token: the API and worker pods only, not the backup job.
            allow(["secretsmanager:GetSecretValue"], [a.redis_auth_secret_arn]),
            allow(["kms:Decrypt"], [a.redis_kms_key_arn]),
        )

    def _backup_policy(self) -> pulumi.Output[str]:
        a = self.args
        return policy_document(
            allow(
                ["s3:PutObject", "s3:AbortMultipartUpload"],
                [pulumi.Output.concat(a.backups_bucket_arn, "/postgres/*")],
            ),
            *self._secret_and_keys(),
        )

    def _secret_and_keys(self) -> list[dict[str, Any]]:
        a = self.args
        return [
            allow(["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"], [a.db_secret_arn]),
            allow(["kms:Decrypt", "kms:GenerateDataKey"], list(a.kms_key_arns)),
        ]

    def _service_account(self, name: str, policy: pulumi.Output[str]) -> k8s.core.v1.ServiceAccount:
        """A service account with an IRSA role only it can assume, limited to this stack's resources."""
        role = service_account_role(
            self.name_of(f"{name}-irsa"),
            oidc_provider_arn=self.args.oidc_provider_arn,
            oidc_provider_url=self.args.oidc_provider_url,
            namespace=self.namespace_name,
            service_account=name,
            inline_policy=policy,
            tags=self.tags,
            opts=self.child,
        )
        return k8s.core.v1.ServiceAccount(
            self.name_of(f"{name}-account"),
            metadata={"name": name, "namespace": self.namespace_name, "annotations": {ROLE_ARN_ANNOTATION: role.arn}},
            automount_service_account_token=False,
            opts=self.in_ns,
        )

    def _fis_access(self, user: str) -> pulumi.Output[str]:
        """The service account FIS's aws:eks:pod actions name, and their Role bound to it and to ``user``, the
        Kubernetes user of FIS's experiment role: in this namespace only. The FIS pod mounts the account's token
        to reach the Kubernetes API, so the account keeps token automounting (the API pods' accounts do not)."""
        metadata = {"namespace": self.namespace_name, "labels": {"app": APP, "component": "fis"}}
        account = k8s.core.v1.ServiceAccount(
            self.name_of("fis-account"), metadata={"name": FIS_ACCOUNT, **metadata}, opts=self.in_ns
        )
        role = k8s.rbac.v1.Role(
            self.name_of("fis-role"),
            metadata={"name": FIS_ACCOUNT, **metadata},
            rules=list(FIS_POD_RULES),
            opts=self.in_ns,
        )
        k8s.rbac.v1.RoleBinding(
            self.name_of("fis-binding"),
            metadata={"name": FIS_ACCOUNT, **metadata},
            role_ref={"apiGroup": RBAC_GROUP, "kind": "Role", "name": role.metadata["name"]},
            subjects=[
                {"kind": "ServiceAccount", "name": account.metadata["name"], "namespace": self.namespace_name},
                {"apiGroup": RBAC_GROUP, "kind": "User", "name": user},
            ],
            opts=self.in_ns,
        )
        return account.metadata["name"]

    def _config_map(self, role: str, name: str, data: Any) -> k8s.core.v1.ConfigMap:
        return k8s.core.v1.ConfigMap(
            self.name_of(role),
            metadata={"name": name, "namespace": self.namespace_name, "labels": {"app": APP}},
            data=data,
            opts=self.in_ns,
        )

    def _environment(self) -> pulumi.Output[dict[str, str]]:
        """The service's environment (service contract), all non-secret coordinates of the platform."""
        a = self.args
        processes = {ENV_NAMES["detector_processes"]: str(_cpu_count(a.baselines.scaling.pod_limits.cpu))}
        environment = a.coordinates.environment(app_port=a.app_port, region=a.region, redis_tls=a.redis_tls)
        return environment.apply(lambda env: env | processes)

    # -- pods ----------------------------------------------------------------------------------------------------

    def _image(self, color: str) -> str:
        return f"{self.s.image_repository}:{self.s.tag(color)}"

    def _main_container(self, name: str, image: str, command: list[str], **extra: Any) -> dict[str, Any]:
        env = [
            # Reported in /health and as a metric label.
            {"name": ENV_NAMES["instance_id"], "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            *pod_specs.pg_env(),
            *pod_specs.redis_password_env(),
        ]
        return pod_specs.container(
            name,
            image,
            command,
            env=env,
            envFrom=[{"configMapRef": {"name": self.env_name}}],
            volumeMounts=pod_specs.mounts(),
            **extra,
        )

    def _pod_template(self, labels: dict[str, str], image: str, containers: list[dict], **extra: Any) -> dict:
        a = self.args
        sidecar = pod_specs.db_credentials_container(
            image, a.db_secret_arn, a.region, sidecar=True, redis_secret_arn=a.redis_auth_secret_arn
        )
        return {
            "metadata": {"labels": labels, "annotations": {"pynomaly.io/config-hash": self.env_hash}},
            "spec": pod_specs.pod_spec(
                self.api_account.metadata["name"], self.scripts_name, containers, [sidecar], **extra
            ),
        }

    def _after(self, *resources: pulumi.Resource | None) -> pulumi.ResourceOptions:
        """In the namespace, and after ``resources`` (None: nothing to wait for)."""
        waits = [r for r in resources if r is not None]
        return pulumi.ResourceOptions.merge(self.in_ns, pulumi.ResourceOptions(depends_on=waits))

    def _deployment(self, role: str, name: str, labels: dict[str, str], template: dict, replicas: int | None = None):
        """``replicas`` None leaves the count out: the colour's scale patch and the HPA own it."""
        return k8s.apps.v1.Deployment(
            self.name_of(role),
            metadata={"name": name, "namespace": self.namespace_name, "labels": labels},
            spec={
                **({} if replicas is None else {"replicas": replicas}),
                "revisionHistoryLimit": 10,  # what `kubectl rollout undo` can go back to
                "selector": {"matchLabels": labels},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": template,
            },
            opts=self.in_ns,
        )

    def _api_deployment(self, color: str) -> k8s.apps.v1.Deployment:
        scaling = self.args.baselines.scaling
        labels = api_labels(color)
        api = self._main_container(
            "api",
            self._image(color),
            ["pynomaly-api"],
            ports=[{"name": pod_specs.API_PORT_NAME, "containerPort": self.args.app_port, "protocol": "TCP"}],
            resources=pod_specs.resources(scaling.pod_requests, scaling.pod_limits),
            lifecycle={"preStop": {"sleep": {"seconds": API_PRESTOP_S}}},
            **pod_specs.http_probes("/health", "/ready", pod_specs.API_PORT_NAME),
        )
        template = self._pod_template(
            labels,
            self._image(color),
            [api],
            terminationGracePeriodSeconds=API_TERMINATION_GRACE_S,
            topologySpreadConstraints=pod_specs.topology_spread(labels),
        )
        return self._deployment(f"api-{color}", deployment_name(color), labels, template)

    def _scale(
        self, deployment: k8s.apps.v1.Deployment, color: str, replicas: int, *after: pulumi.Resource
    ) -> k8s.apps.v1.DeploymentPatch:
        """A colour's replica count, applied (and awaited until the pods are ready) only when it changes."""
        return k8s.apps.v1.DeploymentPatch(
            self.name_of(f"api-{color}-scale"),
            metadata={"name": deployment_name(color), "namespace": self.namespace_name, "annotations": PATCH_FORCE},
            spec={"replicas": replicas},
            opts=self._after(deployment, *after),
        )

    def _worker_deployment(self) -> k8s.apps.v1.Deployment:
        """The queue consumer: runs the active colour's image; its grace period outlasts one message."""
        labels = {"app": APP, "component": "worker"}
        image = self._image(self.s.active_color)
        worker_resources = {"cpu": self.s.worker_cpu, "memory": self.s.worker_memory}
        worker = self._main_container(
            "worker",
            image,
            ["pynomaly-worker"],
            ports=[{"name": pod_specs.METRICS_PORT_NAME, "containerPort": ports.WORKER_METRICS, "protocol": "TCP"}],
            resources=pod_specs.resources(worker_resources, worker_resources),
            **pod_specs.http_probes("/metrics", "/metrics", pod_specs.METRICS_PORT_NAME),
        )
        template = self._pod_template(
            labels,
            image,
            [worker],
            terminationGracePeriodSeconds=self.s.worker_termination_grace_s,
            topologySpreadConstraints=pod_specs.topology_spread(labels),
        )
        return self._deployment("worker", f"{APP}-worker", labels, template, self.s.worker_replicas)

    # -- traffic -------------------------------------------------------------------------------------------------

    def _service(
        self, name: str, selector: dict[str, str], *, skip_await: bool, after: pulumi.Resource | None = None
    ) -> k8s.core.v1.Service:
        # An idle colour's Service may have no pods; Pulumi must not wait for endpoints there.
        annotations = SKIP_AWAIT if skip_await else {}
        return k8s.core.v1.Service(
            self.name_of(f"service-{name}"),
            metadata={
                "name": name,
                "namespace": self.namespace_name,
                "labels": {"app": APP},
                "annotations": annotations,
            },
            spec={
                "type": "ClusterIP",
                "selector": selector,
                "ports": [{"name": "http", "port": 80, "targetPort": pod_specs.API_PORT_NAME, "protocol": "TCP"}],
            },
            opts=self._after(after),
        )

    def _ingress(self, service: k8s.core.v1.Service) -> k8s.networking.v1.Ingress:
        """An internet-facing ALB (AWS Load Balancer Controller) sending HTTPS to the pods' IPs."""
        a = self.args
        prefix = "alb.ingress.kubernetes.io/"
        acl = web_acl(self, "waf", a.waf)
        attributes = [
            f"deletion_protection.enabled={str(a.load_balancer_deletion_protection).lower()}",
            "routing.http.drop_invalid_header_fields.enabled=true",
        ]
        annotations = {
            # The controller fills in the status later; `pulumi up` must not wait for it.
            **SKIP_AWAIT,
            prefix + "scheme": "internet-facing",
            prefix + "target-type": "ip",
            prefix + "listen-ports": json.dumps([{"HTTPS": 443}]),
            prefix + "certificate-arn": a.certificate_arn,
            prefix + "ssl-policy": a.ssl_policy,
            prefix + "healthcheck-path": "/ready",
            prefix + "load-balancer-attributes": ",".join(attributes),
            prefix + "subnets": pulumi.Output.all(*a.public_subnet_ids).apply(",".join),
            # The controller associates the ALB with this (regional) web ACL; its IAM policy grants the wafv2 calls.
            prefix + "wafv2-acl-arn": acl.arn,
        }
        backend = {"service": {"name": service.metadata["name"], "port": {"name": "http"}}}
        return k8s.networking.v1.Ingress(
            self.name_of("ingress"),
            metadata={
                "name": f"{APP}-ingress",
                "namespace": self.namespace_name,
                "labels": {"app": APP},
                "annotations": annotations,
            },
            spec={
                "ingressClassName": "alb",
                "rules": [
                    {
                        "http": {
                            # The public API and the health check only: the instance's own pages
                            # (/metrics, /ready, the docs) get the controller's default 404.
                            "paths": [
                                {"path": path, "pathType": kind, "backend": backend} for path, kind in PUBLIC_PATHS
                            ]
                        }
                    }
                ],
            },
            opts=self._after(a.ingress_controller),
        )

    def _hpa(self, target: k8s.apps.v1.Deployment, after: pulumi.Resource) -> None:
        """001: 3-20 pods at 70 % CPU / 80 % memory, on the active colour only."""
        scaling = self.args.baselines.scaling

        def utilization(resource: str, percent: float) -> dict[str, Any]:
            target_spec = {"type": "Utilization", "averageUtilization": round(percent)}
            return {"type": "Resource", "resource": {"name": resource, "target": target_spec}}

        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            self.name_of("hpa"),
            metadata={"name": APP, "namespace": self.namespace_name, "labels": {"app": APP}},
            spec={
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target.metadata["name"]},
                "minReplicas": scaling.pods_min,
                "maxReplicas": scaling.pods_max,
                "metrics": [
                    utilization("cpu", scaling.target_cpu_percent),
                    utilization("memory", scaling.target_memory_percent),
                ],
            },
            # Retargeted at a switch only once the new colour has pods: the HPA ignores a Deployment at zero.
            opts=self._after(after),
        )

    def _pdb(self, after: pulumi.Resource) -> None:
        """Voluntary disruptions (node drains, upgrades) take one pod of the runbook minimum at a time."""
        k8s.policy.v1.PodDisruptionBudget(
            self.name_of("pdb"),
            metadata={"name": APP, "namespace": self.namespace_name, "labels": {"app": APP}},
            spec={
                "minAvailable": self.args.baselines.scaling.pods_min - 1,
                "selector": {"matchLabels": self.active_selector},
            },
            opts=self._after(after),
        )

    def _network_policies(self) -> None:
        """Deny everything, then allow: the Ingress's ALB to the API, metrics scrapes (VPC addresses) to the worker,
        and from every pod DNS, PostgreSQL and Redis in the data subnets and HTTPS to AWS APIs (not the instance
        metadata).

        The ALB (internet-facing, IP targets) reaches the pods from its nodes in the public subnets, so only those
        are admitted; load generators reach the API through a load balancer too. Kubelet probes come from the pod's
        own node, which the VPC CNI's network policy agent always admits (aws/aws-network-policy-agent#65)."""
        a, port = self.args, netpol.port
        vpc = {"ipBlock": {"cidr": a.vpc_cidr}}
        policies: dict[str, dict[str, Any]] = {
            "default-deny": netpol.DENY_ALL,
            "allow-api-ingress": {
                "podSelector": {"matchLabels": api_labels()},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": netpol.ip_blocks(a.public_subnet_cidrs), "ports": [port(a.app_port)]}],
            },
            "allow-worker-metrics": {
                "podSelector": {"matchLabels": {"app": APP, "component": "worker"}},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [vpc], "ports": [port(ports.WORKER_METRICS)]}],
            },
            "allow-egress": {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    {"to": [netpol.DNS_PEER], "ports": netpol.DNS_PORTS},
                    {"to": netpol.ip_blocks(a.data_subnet_cidrs), "ports": [port(ports.POSTGRES), port(ports.REDIS)]},
                    {"to": [netpol.NOT_METADATA], "ports": [port(443)]},
                ],
            },
        }
        netpol.declare(self, self.namespace_name, APP, policies, self.in_ns)

    # -- backups and alerts --------------------------------------------------------------------------------------

    def _backup_cronjob(self) -> None:
        """001 "Verify backup schedule: kubectl get cronjobs": nightly pg_dump to the backups bucket.

        Three steps in one pod: write the DB credentials, pg_dump (a PostgreSQL client image of the server's major
        version) to a scratch volume, upload with the service image's boto3.
        """
        a = self.args
        image = self._image(self.s.active_color)
        labels = {"app": APP, "component": "backup"}
        small = pod_specs.resources(pod_specs.SIDECAR_REQUESTS, pod_specs.SIDECAR_LIMITS)
        dump_mounts = [*pod_specs.mounts(), {"name": "backup", "mountPath": BACKUP_DIR}]
        pg_dump = pod_specs.container(
            "pg-dump",
            f"public.ecr.aws/docker/library/postgres:{a.postgres_version}-alpine",
            # The DSN (from the ConfigMap) names the service file section holding the user and password.
            ["pg_dump", "--format=custom", "--no-owner", f"--file={BACKUP_FILE}", f"--dbname=$({ENV_NAMES['db_dsn']})"],
            env=pod_specs.pg_env(),
            envFrom=[{"configMapRef": {"name": self.env_name}}],
            volumeMounts=dump_mounts,
            resources=pod_specs.resources({"cpu": "250m", "memory": "256Mi"}, {"cpu": "1000m", "memory": "1Gi"}),
        )
        upload = pod_specs.container(
            "upload",
            image,
            ["python", f"{pod_specs.SCRIPTS_DIR}/upload_backup.py", f"--file={BACKUP_FILE}"],
            env=[
                {"name": "BACKUPS_BUCKET", "value": a.backups_bucket},
                {"name": "AWS_DEFAULT_REGION", "value": a.region},
            ],
            volumeMounts=[*pod_specs.mounts(scripts=True), {"name": "backup", "mountPath": BACKUP_DIR}],
            resources=small,
        )
        credentials = pod_specs.db_credentials_container(image, a.db_secret_arn, a.region, sidecar=False)
        spec = pod_specs.pod_spec(
            self.backup_account.metadata["name"],
            self.scripts_name,
            [upload],
            [credentials, pg_dump],
            restartPolicy="OnFailure",
        )
        spec["volumes"].append({"name": "backup", "emptyDir": {"sizeLimit": "20Gi"}})
        k8s.batch.v1.CronJob(
            self.name_of("db-backup"),
            metadata={"name": f"{APP}-db-backup", "namespace": self.namespace_name, "labels": labels},
            spec={
                "schedule": self.s.backup_schedule,
                "timeZone": "Etc/UTC",
                "concurrencyPolicy": "Forbid",
                "successfulJobsHistoryLimit": 7,
                "failedJobsHistoryLimit": 3,
                "jobTemplate": {
                    "spec": {
                        "backoffLimit": 2,
                        "ttlSecondsAfterFinished": 7 * 24 * 3600,
                        "template": {"metadata": {"labels": labels}, "spec": spec},
                    }
                },
            },
            opts=self.in_ns,
        )

    def _prometheus_rule(self) -> None:
        k8s.apiextensions.CustomResource(
            self.name_of("alert-rules"),
            api_version="monitoring.coreos.com/v1",
            kind="PrometheusRule",
            metadata={"name": f"{APP}-alerts", "namespace": self.namespace_name, "labels": {"app": APP}},
            spec={
                "groups": alert_rules.rule_groups(
                    self.namespace_name, deployment_name(self.s.active_color), self.args.baselines
                )
            },
            opts=self.in_ns,
        )
