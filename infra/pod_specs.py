"""Pod and container specs of the workload, as plain Kubernetes dicts.

Every pod meets the Pod Security Standards' *restricted* profile (the
namespace enforces it): non-root, read-only root filesystem, no capabilities,
no privilege escalation, seccomp RuntimeDefault. Writable paths are emptyDir
volumes. The database password reaches libpq through a service file that the
``db-credentials`` container writes from Secrets Manager with the pod's IRSA
role (infra/pod_scripts/db_credentials.py); in the API and worker pods it also
writes the Redis AUTH token next to it, for PYNOMALY_REDIS_PASSWORD_FILE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pynomaly_ops.baselines import PodResources
from pynomaly_ops.environment import ENV_NAMES, PG_SERVICE

if TYPE_CHECKING:  # values may be Pulumi Outputs (ARNs, generated names); the module itself needs no Pulumi
    import pulumi

UID = 10001  # an unprivileged user; the images need no particular one
SCRIPTS_DIR = "/opt/pynomaly/scripts"
DB_DIR = "/run/pynomaly-db"
PG_SERVICE_FILE = f"{DB_DIR}/pg_service.conf"
REDIS_PASSWORD_FILE = f"{DB_DIR}/redis-password"  # same memory volume, same writer
# The RDS CA bundle: fetched into the image and the AMI at build time (deploy/rds_ca.py), copied by the same writer
# beside the service file so every container that connects (pg_dump's too) finds it; libpq verifies the server
# against it (PGSSLROOTCERT, sslmode=verify-full in the DSN).
RDS_CA_SOURCE = "/opt/pynomaly/certs/rds-global-bundle.pem"
RDS_CA_FILE = f"{DB_DIR}/rds-ca.pem"
REDIS_SECRET_ENV = "REDIS_AUTH_SECRET_ARN"  # where pod_scripts/db_credentials.py finds the Redis token's secret
SECRET_REFRESH_S = 300  # how often the sidecar re-reads the (rotating) DB secret
API_PORT_NAME = "http"
METRICS_PORT_NAME = "metrics"
ZONE_KEY = "topology.kubernetes.io/zone"
HOSTNAME_KEY = "kubernetes.io/hostname"
SIDECAR_REQUESTS = {"cpu": "50m", "memory": "64Mi"}
SIDECAR_LIMITS = {"cpu": "200m", "memory": "128Mi"}
LOCUST_MASTER_RESOURCES = {"cpu": "500m", "memory": "512Mi"}  # it merges the workers' reports and judges the run
# Pod Security Admission on a namespace: every pod in it must meet the restricted profile.
RESTRICTED_NAMESPACE = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")}


def _identity() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "seccompProfile": {"type": "RuntimeDefault"}}


def pod_security_context() -> dict[str, Any]:
    return {**_identity(), "fsGroup": UID}


def container_security_context() -> dict[str, Any]:
    return {
        **_identity(),
        "privileged": False,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def resources(requests: PodResources | dict[str, str], limits: PodResources | dict[str, str]) -> dict[str, Any]:
    as_dict = lambda r: r.model_dump() if isinstance(r, PodResources) else dict(r)  # noqa: E731
    return {"requests": as_dict(requests), "limits": as_dict(limits)}


def http_probes(path_live: str, path_ready: str, port: str) -> dict[str, Any]:
    """Liveness, readiness and a startup probe that gives a slow start (model loading) time before liveness."""

    def get(path: str, **timing: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": port}, "timeoutSeconds": 3, **timing}

    return {
        "startupProbe": get(path_live, periodSeconds=5, failureThreshold=36),
        "livenessProbe": get(path_live, periodSeconds=10, failureThreshold=3),
        "readinessProbe": get(path_ready, periodSeconds=5, failureThreshold=2),
    }


def volumes(scripts_config_map: pulumi.Input[str]) -> list[dict[str, Any]]:
    return [
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
        # Memory-backed: the DB credentials never touch the node's disk.
        {"name": "db-credentials", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        {"name": "scripts", "configMap": {"name": scripts_config_map, "defaultMode": 0o444}},
    ]


def mounts(*, scripts: bool = False, db_writable: bool = False) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "db-credentials", "mountPath": DB_DIR, "readOnly": not db_writable},
    ]
    if scripts:
        result.append({"name": "scripts", "mountPath": SCRIPTS_DIR, "readOnly": True})
    return result


def pg_env(secret_arn: pulumi.Input[str] | None = None) -> list[dict[str, Any]]:
    """libpq reads user and password from the service file and the CA bundle it verifies the server against;
    ``DB_SECRET_ARN`` tells the writer where to get the credentials."""
    env: list[dict[str, Any]] = [
        {"name": "PGSERVICEFILE", "value": PG_SERVICE_FILE},
        {"name": "PGSERVICE", "value": PG_SERVICE},
        {"name": "PGSSLROOTCERT", "value": RDS_CA_FILE},
    ]
    if secret_arn is not None:
        env.append({"name": "DB_SECRET_ARN", "value": secret_arn})
    return env


def redis_password_env() -> list[dict[str, str]]:
    """Where the service reads the Redis AUTH token (on each new connection, so a refresh is picked up)."""
    return [{"name": ENV_NAMES["redis_password_file"], "value": REDIS_PASSWORD_FILE}]


def container(name: str, image: str, command: list[str], **extra: Any) -> dict[str, Any]:
    """A container with the restricted security context and a writable /tmp."""
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "Always",  # tags are mutable in general; always resolve the current image
        "command": command,
        "securityContext": container_security_context(),
        "env": [{"name": "HOME", "value": "/tmp"}, *extra.pop("env", [])],
        **extra,
    }


def db_credentials_container(
    image: str,
    secret_arn: pulumi.Input[str],
    region: str,
    *,
    sidecar: bool,
    redis_secret_arn: pulumi.Input[str] | None = None,
) -> dict[str, Any]:
    """Writes the libpq service file (and with ``redis_secret_arn`` the Redis password file) before the main
    containers start.

    As a sidecar (an init container with ``restartPolicy: Always``, Kubernetes 1.29+) it keeps refreshing
    the files; the main containers start once its startup probe sees them.
    """
    command = ["python", f"{SCRIPTS_DIR}/db_credentials.py"]
    if sidecar:
        command += ["--refresh-s", str(SECRET_REFRESH_S)]
    env = [*pg_env(secret_arn), {"name": "AWS_DEFAULT_REGION", "value": region}]
    files = [PG_SERVICE_FILE]
    if redis_secret_arn is not None:
        env += [{"name": REDIS_SECRET_ENV, "value": redis_secret_arn}, *redis_password_env()]
        files.append(REDIS_PASSWORD_FILE)
    spec = container(
        "db-credentials",
        image,
        command,
        env=env,
        volumeMounts=mounts(scripts=True, db_writable=True),
        resources=resources(SIDECAR_REQUESTS, SIDECAR_LIMITS),
    )
    if sidecar:
        checks = [arg for path in files for arg in ("-a", "-s", path)][1:]  # test -s A -a -s B
        file_written = {"exec": {"command": ["test", *checks]}}
        spec |= {
            "restartPolicy": "Always",
            "startupProbe": {**file_written, "periodSeconds": 2, "failureThreshold": 30},
            "livenessProbe": {**file_written, "periodSeconds": 30},
            "readinessProbe": {**file_written, "periodSeconds": 30},
        }
    return spec


def topology_spread(labels: dict[str, str]) -> list[dict[str, Any]]:
    """Spread over zones (hard: an AZ outage must leave pods elsewhere) and nodes (soft).

    ``nodeTaintsPolicy: Honor`` leaves out nodes tainted unreachable, so a lost zone does not block scheduling in
    the others; ``matchLabelKeys`` spreads each rollout's new ReplicaSet on its own.
    """

    def constraint(key: str, when: str) -> dict[str, Any]:
        return {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": when,
            "labelSelector": {"matchLabels": labels},
            "matchLabelKeys": ["pod-template-hash"],
            "nodeTaintsPolicy": "Honor",
        }

    return [constraint(ZONE_KEY, "DoNotSchedule"), constraint(HOSTNAME_KEY, "ScheduleAnyway")]


def pod_spec(
    service_account: pulumi.Input[str],
    scripts_config_map: pulumi.Input[str],
    containers: list[dict[str, Any]],
    init_containers: list[dict[str, Any]],
    **extra: Any,
) -> dict[str, Any]:
    return {
        "serviceAccountName": service_account,
        # The IRSA webhook mounts its own token; the Kubernetes API token is not needed.
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "initContainers": init_containers,
        "containers": containers,
        "volumes": volumes(scripts_config_map),
        **extra,
    }
