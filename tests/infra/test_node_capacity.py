"""The node range holds the HPA's maximum (infra/node_capacity.py): checked before anything is declared."""

from __future__ import annotations

import pytest
from infra_helpers import NO_CLUSTER, rendered

from infra import node_capacity as nc
from pynomaly_cli.offline import PLACEHOLDERS, OfflineError
from pynomaly_ops import baselines
from pynomaly_ops import settings as stack_settings


def _settings(stack: str, **config: object) -> stack_settings.StackSettings:
    return stack_settings.from_stack_file(stack, {**PLACEHOLDERS, **{f"pynomaly:{k}": v for k, v in config.items()}})


def test_quantities_parse_as_kubernetes_reads_them():
    assert [nc.cpu_millis(q) for q in ("750m", "2", "0.5", "1000m")] == [750, 2000, 500, 1000]
    assert [nc.memory_mib(q) for q in ("2Gi", "64Mi", "1G", "512Ki", "0")] == [2048, 64, 954, 1, 0]
    with pytest.raises(ValueError, match="not a memory quantity"):
        nc.memory_mib("2GB")


def test_allocatable_follows_the_eks_ami_reservations():
    # m6i.xlarge: 4 vCPUs -> 60+10+5+5 m reserved, 125 m of daemonsets; 16 GiB less 7.5 %, 11 x 58 + 255 MiB, 100 MiB
    node = nc.allocatable(nc.instance_types()["m6i.xlarge"])
    assert node == nc.Allocatable(cpu_m=4000 - 80 - 125, memory_mib=int(16384 * 0.925 - 893 - 100), pods=56)
    # above four cores each adds 0.25 %
    assert nc.allocatable(nc.instance_types()["m6i.4xlarge"]).cpu_m == int(16000 - 80 - 12 * 2.5 - 125)


def test_the_table_holds_the_vpc_cni_pod_limits():
    types = nc.instance_types()
    assert (types["m6i.large"].max_pods, types["m6i.xlarge"].max_pods, types["m6i.4xlarge"].max_pods) == (29, 58, 234)
    assert types["t3.medium"] == nc.InstanceType(vcpus=2, memory_mib=4096, max_pods=17)


def test_every_stack_holds_the_hpa_maximum():
    for stack in ("dev", "staging", "prod"):
        nc.check(_settings(stack), baselines.load())


def test_prod_holds_twenty_api_pods_but_not_a_warm_idle_colour_as_well():
    b = baselines.load()
    with pytest.raises(nc.CapacityError) as err:
        nc.check(_settings("prod", **{"workload.idle_replicas": b.scaling.pods_max}), b)
    message = str(err.value)
    assert message.startswith("cluster.node_max: 6 x m6i.xlarge") and "idle-colour API pods" in message
    assert "Raise cluster.node_max to 11" in message
    nc.check(_settings("prod", **{"workload.idle_replicas": b.scaling.pods_max, "cluster.node_max": 11}), b)


def test_the_api_pods_are_spread_over_the_zones_before_they_are_counted():
    # 3 nodes, one per zone, each holding 4 API pods: 12 fit; 13 put a fifth pod in one zone's single node.
    node = nc.Allocatable(cpu_m=3300, memory_mib=100_000, pods=50)
    api = lambda n: [nc.PodGroup("API pods", n, 800, 2112, spread=True)]  # noqa: E731
    assert nc.unplaced(api(12), node, 3) is None
    assert nc.unplaced(api(13), node, 3) == "API pods: pod 13 of 13 (800m CPU, 2112Mi) in zone a"
    # the same demand unspread would still not fit (4 x 3 slots), but a fourth node takes it
    assert nc.unplaced(api(13), node, 4) is None


def test_without_the_autoscaler_the_desired_size_must_hold_it():
    config = {"cluster.node_autoscaler": False, "cluster.node_min": 3, "cluster.node_desired": 3, "cluster.node_max": 3}
    with pytest.raises(nc.CapacityError, match=r"^cluster\.node_desired: 3 x m6i\.xlarge"):
        nc.check(_settings("prod", **config), baselines.load())


def test_an_instance_type_outside_the_table_is_refused_naming_the_file():
    with pytest.raises(nc.CapacityError, match=r"node_instance_type: x9z\.huge is not in instance-types\.yaml"):
        nc.check(_settings("prod", **{"cluster.node_instance_type": "x9z.huge"}), baselines.load())


def test_the_program_refuses_before_declaring_anything():
    with pytest.raises(OfflineError, match=r"cluster\.node_max: 6 x m6i\.xlarge"):
        rendered("prod", {"pynomaly:workload.idle_replicas": 20})
    assert rendered("prod", {**NO_CLUSTER, "pynomaly:workload.idle_replicas": 20}).resources  # no cluster: no check
