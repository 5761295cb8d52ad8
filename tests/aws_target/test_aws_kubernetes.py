"""The EKS half of the AWS fault library (aws_target/kubernetes.py): pod-loss and node-drain.

The real ``kubernetes`` client talks HTTP to a fake of the EKS cluster's Kubernetes API (tests/kube_fake.py: an
in-process server on 127.0.0.1 with a toy Deployment controller, scheduler and Eviction API, serving the stack's
workload), reached through a kubeconfig named by ``$PYNOMALY_KUBECONFIG``: no cluster exists here. The EKS client
(DescribeCluster and the ``aws eks get-token`` token) is tested against moto.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import aws_testkit as kit
import pytest
from kube_fake import ACTIVE, IDLE, NAMESPACE, WORKER, FakeCluster, serving
from moto import mock_aws

from aws_target import kubernetes as kube
from pynomaly_ops import outputs as keys
from pynomaly_ops.outputs import StackOutputs
from pynomaly_ops.stack_outputs import OutputsError
from pynomaly_ops.waiting import Timeout

CLUSTER = kit.name("cluster", "eks")  # infra/cluster.py names it so: <stack>-cluster-eks


def outputs_file(path, **values: Any) -> str:
    """A saved ``pulumi stack output --json`` of an EKS stack (the keys these functions read; the rest unused)."""
    required = {k: f"unused-{k}" for k, f in StackOutputs.model_fields.items() if f.is_required()}
    document = required | {keys.REGION: kit.REGION, keys.CLUSTER_NAME: CLUSTER, keys.WORKLOAD_NAMESPACE: NAMESPACE}
    return kit.write_outputs(path, document | values)


@pytest.fixture
def cluster(tmp_path, monkeypatch) -> Iterator[Callable[..., tuple[FakeCluster, str]]]:
    """``cluster(ready_after_s=..., terminating_s=...)``: the fake with the workload (kube_fake.workload: which pods
    run on which node), reached through $PYNOMALY_KUBECONFIG; returns it and the outputs file."""
    with ExitStack() as started:

        def make(**options: Any) -> tuple[FakeCluster, str]:
            fake = started.enter_context(serving(tmp_path / "kubeconfig", **options))
            monkeypatch.setenv(kube.KUBECONFIG_ENV, str(tmp_path / "kubeconfig"))
            return fake, outputs_file(tmp_path / "outputs.json")

        yield make


def green(fake: FakeCluster) -> list[str]:
    return sorted(p.name for p in fake.pods.values() if p.labels.get("color") == ACTIVE)


# --- what the library shares with the Pulumi program ---------------------------------------------------------------
def test_the_labels_and_names_are_the_programs():
    """aws_target may not import infra/: its copies of the workload's labels and names are checked here."""
    from infra import workload

    assert kube.APP == workload.APP and kube.PDB_NAME == workload.APP
    assert kube.COLORS == workload.COLORS
    for color in workload.COLORS:
        assert kube.api_selector(color) == workload.api_labels(color)
        assert kube.deployment_name(color) == workload.deployment_name(color)


# --- pod-loss --------------------------------------------------------------------------------------------------
def test_delete_api_pods_deletes_one_ready_pod_of_the_active_colour(cluster):
    fake, outputs = cluster(ready_after_s=30)
    before = green(fake)
    done = kube.delete_api_pods(grace_period_s=5, outputs=outputs)
    assert done["deployment"] == "pynomaly-green" and done["color"] == ACTIVE and done["min_available"] == 2
    assert done["deleted"] == before[:1] and done["ready"] == 3
    assert done["nodes"] == {before[0]: "node-a"}
    assert fake.deletions == [(before[0], 5)]  # the grace period passed on
    assert before[0] not in green(fake)  # gone (no termination in this fake)...
    assert len(green(fake)) == 3  # ...and replaced
    assert isinstance(done["time"], float)


def test_delete_api_pods_refuses_to_go_below_the_budget(cluster):
    fake, outputs = cluster(ready_after_s=30)
    with pytest.raises(kube.KubernetesError, match=r"deleting 2 of pynomaly-green's 3 ready pods .* at most 1"):
        kube.delete_api_pods(count=2, outputs=outputs)
    assert fake.deletions == []
    kube.delete_api_pods(outputs=outputs)  # 3 ready -> 2, the budget's minimum; its replacement not ready yet
    with pytest.raises(kube.KubernetesError, match=r"2 ready pods would leave fewer .* minimum of 2: delete at most 0"):
        kube.delete_api_pods(outputs=outputs)
    assert len(fake.deletions) == 1
    with pytest.raises(kube.KubernetesError, match="at least one pod"):
        kube.delete_api_pods(count=0, outputs=outputs)


def test_the_pods_come_back_ready_and_the_deleted_one_is_gone(cluster):
    """The Deployment is ready again (its replacement) before the deleted pod has terminated: the wait also waits
    for it to go."""
    fake, outputs = cluster(ready_after_s=0.1, terminating_s=0.6)
    assert kube.api_pods_ready(outputs=outputs)
    done = kube.delete_api_pods(outputs=outputs)
    assert not kube.api_pods_ready(outputs=outputs)
    back = kube.wait_for_api_pods_ready(timeout_s=10, since=done["time"], replaced=done["deleted"], outputs=outputs)
    assert back["seconds"] >= 0.55  # not at 0.1 s, when the replacement was ready
    assert back["deployment"] == "pynomaly-green" and back["ready"] == 3 and len(back["pods"]) == 3
    assert done["deleted"][0] not in back["pods"] and done["deleted"][0] not in green(fake)
    assert kube.api_pods_ready(outputs=outputs)


def test_waiting_for_the_pods_times_out_naming_what_is_missing(cluster):
    _, outputs = cluster(ready_after_s=60)
    kube.delete_api_pods(outputs=outputs)
    with pytest.raises(Timeout, match=r"pynomaly-green: 2 of 3 replicas ready"):
        kube.wait_for_api_pods_ready(timeout_s=0.2, outputs=outputs)


def test_ready_means_every_replica_and_at_least_the_budget(cluster):
    fake, outputs = cluster()
    fake.budgets[(NAMESPACE, "pynomaly")].min_available = 4  # more than the 3 replicas
    assert not kube.api_pods_ready(outputs=outputs)


def test_the_api_pods_and_their_nodes(cluster):
    fake, outputs = cluster()
    assert kube.api_pods(outputs=outputs) == dict(zip(green(fake), ["node-a", "node-a", "node-b"], strict=True))


# --- node-drain ----------------------------------------------------------------------------------------------
def test_drain_evicts_the_busiest_nodes_pods_honouring_the_budget_and_uncordon_rolls_back(cluster):
    fake, outputs = cluster(ready_after_s=0.3)
    api_on_a = green(fake)[:2]
    worker_on_a = [p for p in fake.pods_on("node-a") if p.startswith("pynomaly-worker")]
    assert kube.nodes_schedulable(outputs=outputs)  # node-d is cordoned, but not by a drill

    done = kube.drain_node(timeout_s=10, outputs=outputs)

    assert done["node"] == "node-a" and done["zone"] == f"{kit.REGION}a" and done["deployment"] == "pynomaly-green"
    assert sorted(done["evicted"]) == sorted([*api_on_a, *worker_on_a]) and done["api_pods"] == api_on_a
    assert fake.cordoned("node-a") and kube.CORDONED_BY_DRILL in fake.nodes["node-a"]["metadata"]["annotations"]
    answers = {pod: [code for name, code in fake.evictions if name == pod] for pod in api_on_a}
    assert answers[api_on_a[0]] == [201]  # 3 healthy: one may go
    assert answers[api_on_a[1]][0] == 429 and answers[api_on_a[1]][-1] == 201  # 2 healthy: held until the replacement
    assert answers[api_on_a[1]].count(201) == 1
    assert not any(name.startswith(("aws-node", "static")) for name, _ in fake.evictions)  # DaemonSet, mirror pods
    assert {"aws-node-node-a", "static-node-a"} <= set(fake.pods_on("node-a"))
    assert not kube.nodes_schedulable(outputs=outputs)

    drained = kube.wait_for_node_drained("node-a", timeout_s=10, since=done["time"], outputs=outputs)
    assert drained["node"] == "node-a" and "node-a" not in drained["pods"].values() and len(drained["pods"]) == 3
    assert kube.api_pods_ready(outputs=outputs)

    assert kube.uncordon_nodes(outputs=outputs)["uncordoned"] == ["node-a"]
    assert not fake.cordoned("node-a") and kube.CORDONED_BY_DRILL not in fake.nodes["node-a"]["metadata"]["annotations"]
    assert fake.cordoned("node-d")  # someone else's: left alone
    assert kube.uncordon_nodes(outputs=outputs)["uncordoned"] == []  # idempotent
    assert kube.nodes_schedulable(outputs=outputs)


def test_drain_gives_up_at_its_deadline_leaving_the_node_cordoned(cluster):
    fake, outputs = cluster(ready_after_s=60)  # the replacement never ready in time: the budget holds the pod
    second = green(fake)[1]
    with pytest.raises(kube.KubernetesError, match=rf"node-a is cordoned but 1 of its pods .* 0.3s .*{second}"):
        kube.drain_node("node-a", timeout_s=0.3, outputs=outputs)
    assert fake.cordoned("node-a") and second in fake.pods_on("node-a")
    assert {code for name, code in fake.evictions if name == second} == {429}
    with pytest.raises(Timeout, match=rf"{second} still on node-a"):
        kube.wait_for_node_drained("node-a", timeout_s=0.2, outputs=outputs)
    assert not kube.nodes_schedulable(outputs=outputs)
    assert kube.uncordon_nodes(outputs=outputs)["uncordoned"] == ["node-a"]


def test_drain_refuses_a_node_someone_else_cordoned_or_one_that_does_not_exist(cluster):
    fake, outputs = cluster()
    with pytest.raises(kube.KubernetesError, match="node-d is cordoned already, not by a drill"):
        kube.drain_node("node-d", outputs=outputs)
    with pytest.raises(kube.KubernetesError, match="no node 'node-z'; the cluster has: node-a, node-b, node-c, node-d"):
        kube.drain_node("node-z", outputs=outputs)
    assert fake.evictions == [] and not fake.cordoned("node-a")


def test_drain_refuses_when_the_pods_would_have_nowhere_to_go(cluster):
    fake, outputs = cluster()
    for node in ("node-b", "node-c"):
        fake.nodes[node]["spec"]["unschedulable"] = True
    with pytest.raises(kube.KubernetesError, match="no other ready, schedulable node"):
        kube.drain_node("node-a", outputs=outputs)
    assert not fake.cordoned("node-a")


# --- reaching the cluster ------------------------------------------------------------------------------------
def test_the_active_colour_is_the_one_the_budget_selects(cluster):
    """infra/workload.py gives the PodDisruptionBudget the active colour's selector: a switch moves it."""
    fake, outputs = cluster(ready_after_s=30)
    fake.budgets[(NAMESPACE, "pynomaly")].selector = kube.api_selector(IDLE)
    blue = sorted(p.name for p in fake.pods.values() if p.labels.get("color") == IDLE)
    done = kube.delete_api_pods(outputs=outputs)
    assert done["deployment"] == "pynomaly-blue" and done["deleted"] == blue[:1]
    del fake.budgets[(NAMESPACE, "pynomaly")]
    with pytest.raises(kube.KubernetesError, match=r"no PodDisruptionBudget 'pynomaly' \(it has: pynomaly-other\)"):
        kube.api_pods_ready(outputs=outputs)
    fake.add_budget(NAMESPACE, "pynomaly", WORKER, min_available=1)
    with pytest.raises(kube.KubernetesError, match=r"selects .* not one colour's API pods"):
        kube.api_pods_ready(outputs=outputs)


def test_a_refused_token_is_explained(cluster, tmp_path, monkeypatch):
    fake, outputs = cluster()
    monkeypatch.setenv(kube.KUBECONFIG_ENV, fake.write_kubeconfig(tmp_path / "other", token="not-the-token"))
    with pytest.raises(kube.KubernetesError, match="refused the credentials \\(401"):
        kube.delete_api_pods(outputs=outputs)


def test_a_missing_kubeconfig_or_namespace_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv(kube.KUBECONFIG_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(kube.KubernetesError, match=r"PYNOMALY_KUBECONFIG names .* not a file"):
        kube.api_pods_ready(outputs=outputs_file(tmp_path / "outputs.json"))
    required = {k: f"unused-{k}" for k, f in StackOutputs.model_fields.items() if f.is_required()}
    with pytest.raises(OutputsError, match="no 'workload_namespace'"):
        kube.nodes_schedulable(outputs=kit.write_outputs(tmp_path / "old.json", required | {keys.REGION: kit.REGION}))


# --- the EKS cluster: DescribeCluster and the token ---------------------------------------------------------------
PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


@pytest.fixture
def eks(tmp_path, monkeypatch) -> Iterator[str]:
    """The stack's EKS cluster in moto, with a certificate authority as EKS gives it (moto's is random text)."""
    monkeypatch.delenv(kube.KUBECONFIG_ENV, raising=False)
    with mock_aws():
        from moto.eks.models import eks_backends

        kit.client("eks").create_cluster(
            name=CLUSTER, roleArn=f"arn:aws:iam::{kit.ACCOUNT}:role/eks", resourcesVpcConfig={"subnetIds": []}
        )
        authority = {"data": base64.b64encode(PEM.encode()).decode()}
        eks_backends[kit.ACCOUNT][kit.REGION].clusters[CLUSTER].certificate_authority = authority
        yield outputs_file(tmp_path / "outputs.json")


def _decoded(token: str) -> str:
    assert token.startswith(kube.TOKEN_PREFIX)
    body = token.removeprefix(kube.TOKEN_PREFIX)
    assert "=" not in body and "+" not in body and "/" not in body  # base64url without padding
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()


def test_the_token_is_a_presigned_get_caller_identity_naming_the_cluster():
    url = urlparse(_decoded(kube.eks_token(CLUSTER, kit.REGION)))
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert url.scheme == "https" and url.hostname == f"sts.{kit.REGION}.amazonaws.com"
    assert query["Action"] == "GetCallerIdentity" and query["Version"] == "2011-06-15"
    assert query["X-Amz-Expires"] == "60" and query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert set(query["X-Amz-SignedHeaders"].split(";")) == {"host", kube.CLUSTER_ID_HEADER}
    assert f"/{kit.REGION}/sts/aws4_request" in query["X-Amz-Credential"] and query["X-Amz-Signature"]


def test_the_stacks_cluster_is_reached_with_its_endpoint_authority_and_a_token(eks, calls, monkeypatch):
    made: list[tuple[str, str]] = []
    real = kube.eks_token
    monkeypatch.setattr(kube, "eks_token", lambda name, region: made.append((name, region)) or real(name, region))
    api = kube.api_client(outputs=eks)
    configuration = api.configuration
    assert [(op, p) for s, op, p in calls.seen if s == "eks"] == [("DescribeCluster", {"name": CLUSTER})]
    described = kit.client("eks").describe_cluster(name=CLUSTER)["cluster"]
    assert configuration.host == described["endpoint"] and configuration.ca_cert_data == PEM
    bearer = configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
    assert bearer.startswith(f"Bearer {kube.TOKEN_PREFIX}")
    query = parse_qs(urlparse(_decoded(bearer.removeprefix("Bearer "))).query)
    assert query["X-Amz-Expires"] == ["60"] and kube.CLUSTER_ID_HEADER in query["X-Amz-SignedHeaders"][0]
    assert made == [(CLUSTER, kit.REGION)]  # the stack's region, not the environment's
    monkeypatch.setattr(kube, "TOKEN_REFRESH_S", 0)  # a long wait: the next request gets a fresh token
    configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
    assert made == [(CLUSTER, kit.REGION)] * 2
    api.close()


def test_a_missing_cluster_is_named(eks, tmp_path):
    """The stack's cluster deleted (or the outputs of another region): named, with where it was looked for."""
    outputs = json.loads(Path(eks).read_text()) | {keys.REGION: "eu-central-1"}
    with pytest.raises(kube.KubernetesError, match=f"no EKS cluster '{CLUSTER}' in eu-central-1"):
        kube.api_pods_ready(outputs=kit.write_outputs(tmp_path / "gone.json", outputs))
