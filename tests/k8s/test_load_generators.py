"""The load generators (infra/load_generators.py): declared only when a stack enables them, runnable from the
image and the ConfigMap they mount, reachable by `load run --remote` (loadtests/remote.py) and nothing else."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from infra.load_generators import LOCUSTFILE, MOUNT, suite_files
from pynomaly_ops import REPO_ROOT
from pynomaly_ops.naming import (
    LOAD_API_KEY_ITEM,
    LOAD_API_KEY_SECRET,
    LOCUST_BUS_PORT,
    LOCUST_MASTER_SERVICE,
    LOCUST_WEB_PORT,
)
from pynomaly_ops.settings import SettingsError, from_stack_file

NS = "pynomaly-load-prod"


def _in_ns(stack, kind: str) -> list[dict]:
    return [m for m in stack.all(kind) if m["metadata"].get("namespace") == NS or m["metadata"]["name"] == NS]


def test_off_unless_a_stack_enables_them(each_stack):
    assert not [m for m in each_stack.objects if "pynomaly-load" in str(m["metadata"].get("namespace", ""))]
    assert "load_generators_namespace" not in each_stack.rendering.outputs


def test_enabled_they_get_a_restricted_namespace_of_their_own_and_the_output_names_it(variant):
    (ns,) = _in_ns(variant, "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert variant.rendering.outputs["load_generators_namespace"] == NS


def test_the_suite_comes_from_the_checkout_and_mounts_where_the_command_looks(variant):
    (cm,) = _in_ns(variant, "ConfigMap")
    assert cm["data"] == suite_files()
    assert cm["data"]["loadtests.locustfile.py"] == (REPO_ROOT / "loadtests" / "locustfile.py").read_text()
    for d in _in_ns(variant, "Deployment"):
        spec = d["spec"]["template"]["spec"]
        (suite,) = [v for v in spec["volumes"] if v["name"] == "suite"]
        paths = {i["path"] for i in suite["configMap"]["items"]}
        assert {"baselines.yaml", "loadtests/locustfile.py", "loadtests/shapes.py", "loadtests/remote.py"} <= paths
        (c,) = spec["containers"]
        assert c["command"][:3] == ["locust", "-f", LOCUSTFILE]
        assert PurePosixPath(LOCUSTFILE).relative_to(MOUNT).as_posix() in paths
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["PYTHONPATH"] == MOUNT and env["PYNOMALY_BASELINES"] == f"{MOUNT}/baselines.yaml"
        # The key: a file from the operator's Secret, never an environment value or a manifest's.
        assert "PYNOMALY_API_KEY" not in env
        (key,) = [v for v in spec["volumes"] if v["name"] == "api-key"]
        assert key["secret"] == {"secretName": LOAD_API_KEY_SECRET, "optional": True, "defaultMode": 0o440}
        (mount,) = [m for m in c["volumeMounts"] if m["name"] == "api-key"]
        assert env["PYNOMALY_API_KEY_FILE"] == f"{mount['mountPath']}/{LOAD_API_KEY_ITEM}"
        assert d["spec"]["template"]["metadata"]["annotations"]["pynomaly.io/suite-hash"]


def test_one_master_in_web_mode_and_the_workers_asked_for_on_its_service(variant):
    deployments = {d["metadata"]["name"]: d for d in _in_ns(variant, "Deployment")}
    master, worker = deployments["locust-master"], deployments["locust-worker"]
    assert master["spec"]["replicas"] == 1 and master["spec"]["strategy"] == {"type": "Recreate"}
    (m,) = master["spec"]["template"]["spec"]["containers"]
    assert "--master" in m["command"] and "--headless" not in m["command"]  # left running: web mode
    host = m["command"][m["command"].index("--host") + 1]
    assert host == variant.rendering.outputs["load_balancer_url"]
    assert m["command"][m["command"].index("--lt-target") + 1] == "prod"  # load.normal_rate_per_s's key
    assert worker["spec"]["replicas"] == 3  # loadgen.workers in the variant
    (w,) = worker["spec"]["template"]["spec"]["containers"]
    (service,) = _in_ns(variant, "Service")
    assert service["metadata"]["name"] == LOCUST_MASTER_SERVICE and service["spec"]["type"] == "ClusterIP"
    assert w["command"][w["command"].index("--master-host") + 1] == f"{LOCUST_MASTER_SERVICE}.{NS}.svc.cluster.local"
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert (ports["web"]["port"], ports["bus"]["port"]) == (LOCUST_WEB_PORT, LOCUST_BUS_PORT) == (8089, 5557)
    named = {p["name"] for p in m["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} == named
    assert w["resources"]["requests"] == w["resources"]["limits"] == {"cpu": "1000m", "memory": "1Gi"}
    # The stack's repository and the active colour's tag, loadgen-built.
    assert w["image"] == m["image"] == f"pynomaly/pynomaly-api:{variant.settings.workload.green_tag}-loadgen"


def test_nothing_reaches_the_web_ui_over_the_network_and_workers_reach_only_the_master_and_the_web(variant):
    policies = {p["metadata"]["name"]: p["spec"] for p in _in_ns(variant, "NetworkPolicy")}
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    ingress_ports = [p["port"] for s in policies.values() for rule in s.get("ingress", []) for p in rule["ports"]]
    assert ingress_ports == [LOCUST_BUS_PORT]  # the web port only through kubectl port-forward
    (out,) = [
        s
        for s in policies.values()
        if s["podSelector"].get("matchLabels", {}).get("component") == "worker" and "Egress" in s["policyTypes"]
    ]
    web = [rule for rule in out["egress"] if "ipBlock" in rule["to"][0]]
    assert web[0]["to"][0]["ipBlock"]["except"] == ["169.254.169.254/32"]
    assert sorted(p["port"] for p in web[0]["ports"]) == [80, 443]


def test_load_generators_without_the_cluster_are_refused_naming_the_key():
    from pynomaly_cli.offline import PLACEHOLDERS

    bad = {**PLACEHOLDERS, "pynomaly:loadgen.enabled": "true", "pynomaly:cluster.enabled": "false"}
    with pytest.raises(SettingsError, match=r"pynomaly:loadgen\.enabled: the load generators run on the EKS cluster"):
        from_stack_file("dev", bad)
    with pytest.raises(SettingsError, match=r"pynomaly:loadgen\.workers"):
        from_stack_file("dev", {**PLACEHOLDERS, "pynomaly:loadgen.workers": "0"})
