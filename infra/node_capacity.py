"""Whether the cluster's node range can hold the workload at its extremes, checked before anything is declared.

At the HPA's maximum (``scaling.pods_max`` API pods) plus the idle colour (``workload.idle_replicas``), the queue
workers, the load generators and the cluster's own pods must fit on ``cluster.node_max`` nodes (the Cluster
Autoscaler's ceiling; ``cluster.node_desired`` without it), spread over the three zones as the API pods' hard zone
spread demands. Otherwise the HPA asks for pods nothing can place: they stay Pending in the incident they were for.

What a node gives pods is computed the way the EKS AMI sets the kubelet up: kube-reserved CPU (6 % of the first
core, 1 % of the second, 0.5 % of the next two, 0.25 % of the rest), kube-reserved memory (11 MiB per pod of the
VPC CNI's limit + 255 MiB), the 100 MiB hard-eviction threshold, and the memory the hypervisor and the kernel keep
(Karpenter's default estimate, 7.5 %). Pure: no Pulumi.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from infra import pod_specs
from pynomaly_ops.baselines import Baselines
from pynomaly_ops.settings import ZONE_COUNT, StackSettings

TYPES_FILE = Path(__file__).with_name("instance-types.yaml")
EVICTION_MIB = 100
VM_MEMORY_OVERHEAD = 0.075
# Per node, on every node: the VPC CNI (aws-node) and kube-proxy as the EKS add-ons install them (host network).
DAEMONSET_CPU_M = 25 + 100
DAEMONSET_PODS = 2
# What the pods request besides their main container (tests/k8s/test_pod_requests.py checks the rendered pods).
SIDECAR = (pod_specs.SIDECAR_REQUESTS["cpu"], pod_specs.SIDECAR_REQUESTS["memory"])  # the credentials sidecar
LOADGEN_MASTER = (pod_specs.LOCUST_MASTER_RESOURCES["cpu"], pod_specs.LOCUST_MASTER_RESOURCES["memory"])
COREDNS = ("100m", "70Mi")  # the EKS CoreDNS add-on's requests, two replicas
MAX_SUGGESTED_NODES = 100


class CapacityError(ValueError):
    """The node range cannot hold the pods; the message names the setting to change."""


@dataclass(frozen=True)
class InstanceType:
    vcpus: int
    memory_mib: int
    max_pods: int


@dataclass(frozen=True)
class Allocatable:
    cpu_m: int
    memory_mib: int
    pods: int


@dataclass(frozen=True)
class PodGroup:
    """``count`` pods requesting ``cpu_m`` and ``memory_mib`` each; ``spread``: over the zones, max skew 1."""

    name: str
    count: int
    cpu_m: int
    memory_mib: int
    spread: bool = False


@lru_cache(maxsize=1)
def instance_types() -> dict[str, InstanceType]:
    return {name: InstanceType(**spec) for name, spec in yaml.safe_load(TYPES_FILE.read_text())["types"].items()}


def cpu_millis(quantity: str) -> int:
    """A Kubernetes CPU quantity (750m, 2, 0.5) in millicores."""
    return int(quantity[:-1]) if quantity.endswith("m") else round(float(quantity) * 1000)


_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_UNIT_BYTES: dict[str | None, int] = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_UNIT_BYTES.update({"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40})


def memory_mib(quantity: str) -> int:
    """A Kubernetes memory quantity (2Gi, 512Mi, 1G) in MiB, rounded up."""
    match = _MEMORY.match(quantity)
    if not match:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    return math.ceil(float(match.group(1)) * _UNIT_BYTES[match.group(2)] / 2**20)


def _reserved_cpu_m(vcpus: int) -> float:
    shares = [0.06, 0.01, 0.005, 0.005]
    return sum(1000 * (shares[i] if i < len(shares) else 0.0025) for i in range(vcpus))


def allocatable(t: InstanceType) -> Allocatable:
    """What one node gives the stack's pods (daemonsets taken off)."""
    memory = t.memory_mib * (1 - VM_MEMORY_OVERHEAD) - (11 * t.max_pods + 255) - EVICTION_MIB
    cpu = 1000 * t.vcpus - _reserved_cpu_m(t.vcpus) - DAEMONSET_CPU_M
    return Allocatable(int(cpu), int(memory), t.max_pods - DAEMONSET_PODS)


def _group(name: str, count: int, *requests: tuple[str, str], spread: bool = False) -> PodGroup:
    cpu = sum(cpu_millis(c) for c, _ in requests)
    memory = sum(memory_mib(m) for _, m in requests)
    return PodGroup(name, count, cpu, memory, spread)


def demand(s: StackSettings, b: Baselines, api_pods: int) -> list[PodGroup]:
    """The pods on the cluster with ``api_pods`` of the active colour (the idle colour at its fixed count)."""
    api = (b.scaling.pod_requests.cpu, b.scaling.pod_requests.memory)
    groups = [
        _group("API pods", api_pods, api, SIDECAR, spread=True),
        _group("idle-colour API pods (workload.idle_replicas)", s.workload.idle_replicas, api, SIDECAR, spread=True),
        _group("queue workers", s.workload.worker_replicas, (s.workload.worker_cpu, s.workload.worker_memory), SIDECAR),
        _group("CoreDNS", 2, COREDNS),
        _group("Load Balancer Controller", 2 if s.cluster.load_balancer_controller else 0, ("0", "0")),
        _group("Cluster Autoscaler", 1 if s.cluster.node_autoscaler else 0, ("0", "0")),
    ]
    if s.loadgen.enabled:
        worker = (s.loadgen.worker_cpu, s.loadgen.worker_memory)
        groups += [_group("Locust master", 1, LOADGEN_MASTER), _group("Locust workers", s.loadgen.workers, worker)]
    return [g for g in groups if g.count]


@dataclass
class _Node:
    zone: int
    cpu_m: int
    memory_mib: int
    pods: int

    def take(self, g: PodGroup) -> bool:
        if self.pods < 1 or self.cpu_m < g.cpu_m or self.memory_mib < g.memory_mib:
            return False
        self.cpu_m, self.memory_mib, self.pods = self.cpu_m - g.cpu_m, self.memory_mib - g.memory_mib, self.pods - 1
        return True


def unplaced(groups: list[PodGroup], node: Allocatable, nodes: int) -> str | None:
    """Place the pods (largest first; spread groups zone by zone, max skew 1) on ``nodes`` nodes balanced over
    the zones, as the Auto Scaling Group spreads them; the first pod that fits nowhere, or None."""
    pool = [_Node(i % ZONE_COUNT, node.cpu_m, node.memory_mib, node.pods) for i in range(nodes)]
    for g in sorted(groups, key=lambda g: (not g.spread, -g.cpu_m, -g.memory_mib)):
        for k in range(g.count):
            zone = k % ZONE_COUNT
            candidates = [n for n in pool if not g.spread or n.zone == zone]
            if not any(n.take(g) for n in candidates):
                where = f" in zone {'abc'[zone]}" if g.spread else ""
                return f"{g.name}: pod {k + 1} of {g.count} ({g.cpu_m}m CPU, {g.memory_mib}Mi){where}"
    return None


def check(s: StackSettings, b: Baselines) -> None:
    """Refuse a node range that cannot hold the workload at the HPA's maximum or minimum."""
    c = s.cluster
    if not c.declares_kubernetes:
        return
    t = instance_types().get(c.node_instance_type)
    if t is None:
        raise CapacityError(
            f"cluster.node_instance_type: {c.node_instance_type} is not in {TYPES_FILE.name}, so the node range "
            f"cannot be checked; add its vCPUs, memory and max pods (amazon-eks-ami eni-max-pods.txt) there"
        )
    node = allocatable(t)
    # With the autoscaler the node group grows to node_max when pods are Pending; without it, it stays at desired.
    key, nodes = ("cluster.node_max", c.node_max) if c.node_autoscaler else ("cluster.node_desired", c.node_desired)
    pods = b.scaling.pods_max
    missing = unplaced(demand(s, b, pods), node, nodes)
    if missing is None:
        return
    enough = next((n for n in range(nodes + 1, MAX_SUGGESTED_NODES) if not unplaced(demand(s, b, pods), node, n)), 0)
    raise CapacityError(
        f"{key}: {nodes} x {c.node_instance_type} (each {node.cpu_m}m CPU, {node.memory_mib}Mi and {node.pods} pods "
        f"for the stack) cannot hold {pods} API pods (scaling.pods_max in baselines.yaml) with the rest of the "
        f"workload: {missing} fits nowhere. "
        + (f"Raise {key} to {enough}, or use" if enough else "Use")
        + " a larger cluster.node_instance_type, or lower workload.idle_replicas"
    )
