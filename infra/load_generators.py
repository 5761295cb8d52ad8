"""Load generators tier: Locust on the stack's EKS cluster, for load from beyond one machine.

A master left running in web mode and ``loadgen.workers`` workers, in a namespace of their own
(``pynomaly-load-<stack>``, restricted pods, deny-by-default network policies). ``pynomaly-ops load run
--stack NAME --remote`` drives the master through ``kubectl port-forward`` (loadtests/remote.py): its
Service is ClusterIP only and nothing may reach its web port over the network, so its web UI (which has no
login) is open only to whoever may port-forward in the namespace.

The suite (loadtests/*.py) and the numbers file come from a ConfigMap built from the checkout ``pulumi up``
runs in, so the pods run the load test the operator reviewed, and a change to it rolls them (a hash on the
pod template) with no new image. The image (``loadgen.image_tag``: the app image built with
``EXTRAS=service,loadtests``) brings Python, Locust and pynomaly_ops.

The API key is not in the state: the operator creates the Secret ``pynomaly-load-api-key`` in the namespace
(loadtests/README.md); the pods read it, optional so they start without it (``--remote`` refuses to start a
run of the API mix until it is there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra import network_policies as netpol
from infra import pod_specs
from infra.tier import Tier
from infra.workload import config_hash
from pynomaly_ops import REPO_ROOT
from pynomaly_ops.baselines import PATH_ENV as BASELINES_ENV
from pynomaly_ops.naming import (
    LOAD_ALLOW_REMOTE_ENV,
    LOAD_API_KEY_FILE_ENV,
    LOAD_API_KEY_ITEM,
    LOAD_API_KEY_SECRET,
    LOCUST_BUS_PORT,
    LOCUST_MASTER_SERVICE,
    LOCUST_WEB_PORT,
    load_generators_namespace,
)
from pynomaly_ops.settings import LoadGenerators as LoadGeneratorsSettings
from pynomaly_ops.settings import Workload as WorkloadSettings

APP = "locust"
MOUNT = "/opt/pynomaly/load"
SUITE = REPO_ROOT / "loadtests"
LOCUSTFILE = f"{MOUNT}/loadtests/locustfile.py"
KEY_DIR = "/run/pynomaly-load"
# A worker serves no port a probe could ask; the master drops one whose heartbeats stop (Locust's own check)
# and `load run --remote` waits for the workers it needs. Checkov's skip annotations, with the reason.
_NO_PORT = "a Locust worker serves no port to probe; the master drops a worker whose heartbeats stop"
WORKER_PROBES_SKIPPED = {"checkov.io/skip1": f"CKV_K8S_8={_NO_PORT}", "checkov.io/skip2": f"CKV_K8S_9={_NO_PORT}"}


def suite_files() -> dict[str, str]:
    """ConfigMap keys (no ``/`` allowed) -> file contents: loadtests/*.py and the numbers file."""
    files = {f"loadtests.{p.name}": p.read_text() for p in sorted(SUITE.glob("*.py"))}
    return files | {"baselines.yaml": (REPO_ROOT / "baselines.yaml").read_text()}


def suite_paths(files: dict[str, str]) -> list[dict[str, str]]:
    """Each key back to its path under the mount (``loadtests.shapes.py`` -> ``loadtests/shapes.py``)."""
    return [{"key": k, "path": k.replace("loadtests.", "loadtests/", 1)} for k in sorted(files)]


def image(workload: WorkloadSettings, loadgen: LoadGeneratorsSettings) -> str:
    """``loadgen.image_tag`` in the app's repository; by default the active colour's tag with ``-loadgen``."""
    tag = loadgen.image_tag or f"{workload.tag(workload.active_color)}-loadgen"
    return f"{workload.image_repository}:{tag}"


def labels(role: str) -> dict[str, str]:
    return {"app": APP, "component": role}


@dataclass
class LoadGeneratorsArgs:
    settings: LoadGeneratorsSettings
    provider: pulumi.ProviderResource
    image: str
    target_url: pulumi.Input[str]  # the master's default --host; each run's /swarm may name another


class LoadGenerators(Tier):
    TIER = "loadgen"

    namespace: pulumi.Output[str]

    def __init__(
        self, stack: str, tags: dict[str, str], args: LoadGeneratorsArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__(stack, tags, opts)
        self.args, self.s = args, args.settings
        self.namespace_name = load_generators_namespace(stack)
        ns = k8s.core.v1.Namespace(
            self.name_of("namespace"),
            metadata={"name": self.namespace_name, "labels": pod_specs.RESTRICTED_NAMESPACE},
            opts=pulumi.ResourceOptions(parent=self, provider=args.provider),
        )
        self.in_ns = pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=[ns])
        files = suite_files()
        suite = k8s.core.v1.ConfigMap(
            self.name_of("suite"),
            metadata={"name": "locust-suite", "namespace": self.namespace_name, "labels": {"app": APP}},
            data=files,
            opts=self.in_ns,
        )
        self.suite_name, self.suite_hash, self.paths = suite.metadata["name"], config_hash(files), suite_paths(files)
        master = self._deployment("master", 1, self._master_container())
        self._service(after=master)
        self._deployment("worker", self.s.workers, self._worker_container())
        self._network_policies()
        self.namespace = ns.metadata["name"]
        self.register_outputs({"namespace": self.namespace})

    def _container(self, role: str, command: list[Any], resources: dict[str, str], **extra: Any) -> dict[str, Any]:
        env = [
            {"name": "PYTHONPATH", "value": MOUNT},  # the ConfigMap's loadtests/ before the image's
            {"name": BASELINES_ENV, "value": f"{MOUNT}/baselines.yaml"},
            {"name": LOAD_ALLOW_REMOTE_ENV, "value": "1"},  # the target is not loopback here
            {"name": LOAD_API_KEY_FILE_ENV, "value": f"{KEY_DIR}/{LOAD_API_KEY_ITEM}"},
        ]
        return pod_specs.container(
            role,
            self.args.image,
            command,
            env=env,
            volumeMounts=[
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "suite", "mountPath": MOUNT, "readOnly": True},
                {"name": "api-key", "mountPath": KEY_DIR, "readOnly": True},
            ],
            resources=pod_specs.resources(resources, resources),
            **extra,
        )

    def _master_container(self) -> dict[str, Any]:
        command: list[Any] = ["locust", "-f", LOCUSTFILE, "--master", "--master-bind-port", str(LOCUST_BUS_PORT)]
        command += ["--web-port", str(LOCUST_WEB_PORT), "--lt-target", self.stack, "--host", self.args.target_url]
        web = {"httpGet": {"path": "/", "port": "web"}, "timeoutSeconds": 3}
        return self._container(
            "master",
            command,
            pod_specs.LOCUST_MASTER_RESOURCES,
            ports=[
                {"name": "web", "containerPort": LOCUST_WEB_PORT},
                {"name": "bus", "containerPort": LOCUST_BUS_PORT},
            ],
            readinessProbe={**web, "periodSeconds": 5},
            livenessProbe={**web, "periodSeconds": 20, "failureThreshold": 3},
        )

    def _worker_container(self) -> dict[str, Any]:
        master = f"{LOCUST_MASTER_SERVICE}.{self.namespace_name}.svc.cluster.local"
        command = ["locust", "-f", LOCUSTFILE, "--worker", "--master-host", master]
        command += ["--master-port", str(LOCUST_BUS_PORT)]
        resources = {"cpu": self.s.worker_cpu, "memory": self.s.worker_memory}
        return self._container("worker", command, resources)

    def _deployment(self, role: str, replicas: int, container: dict[str, Any]) -> k8s.apps.v1.Deployment:
        selector = labels(role)
        spec = {
            "automountServiceAccountToken": False,  # nothing here talks to the Kubernetes API
            "securityContext": pod_specs.pod_security_context(),
            "containers": [container],
            "volumes": [
                {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                {"name": "suite", "configMap": {"name": self.suite_name, "items": self.paths, "defaultMode": 0o444}},
                # A file, not an environment variable (which `kubectl describe` and crash dumps show); optional,
                # so the pods start before the operator creates it.
                {
                    "name": "api-key",
                    "secret": {"secretName": LOAD_API_KEY_SECRET, "optional": True, "defaultMode": 0o440},
                },
            ],
        }
        annotations = {}
        if role == "worker":  # from every zone, as the users' traffic comes
            spec["topologySpreadConstraints"] = pod_specs.topology_spread(selector)
            annotations = WORKER_PROBES_SKIPPED
        return k8s.apps.v1.Deployment(
            self.name_of(role),
            metadata={
                "name": f"{APP}-{role}",
                "namespace": self.namespace_name,
                "labels": selector,
                "annotations": annotations,
            },
            spec={
                "replicas": replicas,
                "selector": {"matchLabels": selector},
                # The master holds a run's state: never two at once.
                **({"strategy": {"type": "Recreate"}} if role == "master" else {}),
                "template": {
                    "metadata": {"labels": selector, "annotations": {"pynomaly.io/suite-hash": self.suite_hash}},
                    "spec": spec,
                },
            },
            opts=self.in_ns,
        )

    def _service(self, after: pulumi.Resource) -> None:
        k8s.core.v1.Service(
            self.name_of("master-service"),
            metadata={"name": LOCUST_MASTER_SERVICE, "namespace": self.namespace_name, "labels": labels("master")},
            spec={
                "type": "ClusterIP",
                "selector": labels("master"),
                "ports": [
                    {"name": "web", "port": LOCUST_WEB_PORT, "targetPort": "web"},
                    {"name": "bus", "port": LOCUST_BUS_PORT, "targetPort": "bus"},
                ],
            },
            opts=pulumi.ResourceOptions.merge(self.in_ns, pulumi.ResourceOptions(depends_on=[after])),
        )

    def _network_policies(self) -> None:
        """Deny everything, then allow: DNS; the workers to the master's bus; the workers out to the target on
        80/443 (not the instance metadata). No ingress to the web port: it is reached by port-forward only."""
        port, master = netpol.port, labels("master")
        policies: dict[str, dict[str, Any]] = {
            "default-deny": netpol.DENY_ALL,
            "allow-bus-from-workers": {
                "podSelector": {"matchLabels": master},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {"from": [{"podSelector": {"matchLabels": labels("worker")}}], "ports": [port(LOCUST_BUS_PORT)]}
                ],
            },
            "allow-dns": {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{"to": [netpol.DNS_PEER], "ports": netpol.DNS_PORTS}],
            },
            "allow-worker-egress": {
                "podSelector": {"matchLabels": labels("worker")},
                "policyTypes": ["Egress"],
                "egress": [
                    {"to": [{"podSelector": {"matchLabels": master}}], "ports": [port(LOCUST_BUS_PORT)]},
                    {"to": [netpol.NOT_METADATA], "ports": [port(80), port(443)]},
                ],
            },
        }
        netpol.declare(self, self.namespace_name, APP, policies, self.in_ns)
