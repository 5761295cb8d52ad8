"""The pod requests the node capacity check counts (infra/node_capacity.py) are those the rendered pods make."""

from __future__ import annotations

from infra import node_capacity as nc
from pynomaly_ops import baselines


def _requests(pod_spec: dict) -> tuple[int, int]:
    """What the scheduler reserves for a pod: its containers plus its sidecars (restartPolicy Always), or the
    largest plain init container if that is more."""
    running = [*pod_spec["containers"], *(c for c in pod_spec.get("initContainers", []) if c.get("restartPolicy"))]
    cpu = sum(nc.cpu_millis(c["resources"]["requests"]["cpu"]) for c in running)
    memory = sum(nc.memory_mib(c["resources"]["requests"]["memory"]) for c in running)
    return cpu, memory


def test_the_capacity_check_counts_what_the_api_and_worker_pods_request(each_stack):
    groups = {g.name: g for g in nc.demand(each_stack.settings, baselines.load(), api_pods=1)}
    for deployment, group in (("pynomaly-blue", "API pods"), ("pynomaly-worker", "queue workers")):
        spec = each_stack.get("Deployment", deployment)["spec"]["template"]["spec"]
        assert _requests(spec) == (groups[group].cpu_m, groups[group].memory_mib), deployment


def test_the_capacity_check_counts_what_the_load_generators_request(variant):
    groups = {g.name: g for g in nc.demand(variant.settings, baselines.load(), api_pods=1)}
    deployments = {d["metadata"]["name"]: d for d in variant.all("Deployment")}
    masters = [d for name, d in deployments.items() if "master" in name]
    workers = [d for name, d in deployments.items() if "locust" in name and "worker" in name]
    assert len(masters) == 1 and len(workers) == 1
    for deployment, group in ((masters[0], "Locust master"), (workers[0], "Locust workers")):
        assert _requests(deployment["spec"]["template"]["spec"]) == (groups[group].cpu_m, groups[group].memory_mib)
    assert workers[0]["spec"]["replicas"] == groups["Locust workers"].count
