"""Break and observe the workload on a stack's EKS cluster: the pod-loss and node-drain drills.

pod-loss deletes API pods of the active colour (the Deployment replaces them; the PodDisruptionBudget and the HPA
keep the service up); node-drain cordons one node and evicts its pods through the Eviction API, which honours the
PodDisruptionBudget, as ``kubectl drain --ignore-daemonsets --delete-emptydir-data`` does; the pods reschedule.

The cluster is the stack's: its ``cluster_name`` output names it, EKS's DescribeCluster gives its endpoint and
certificate authority, and a bearer token is made as ``aws eks get-token`` makes it (from boto3's default
session, in the stack's region). Where ``$PYNOMALY_KUBECONFIG`` names a kubeconfig file, its current context is
used instead. The workload is the ``workload_namespace`` output's; the active colour is the one the
PodDisruptionBudget selects (infra/workload.py gives it, the Service and the HPA the active colour's labels).

Same conventions as aws_target/faults.py and probes.py: ``outputs`` and ``stack`` name the stack; faults return
the wall-clock ``time`` of the fault, waits the ``seconds`` since ``since``; waits poll every
:data:`aws_target.target.POLL_INTERVAL_S` until a deadline.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
from kubernetes import client as k8s
from kubernetes import config as kubeconfig
from kubernetes.client.exceptions import ApiException

from aws_target import target as targets
from aws_target.target import Target, resolve
from pynomaly_ops import outputs as keys
from pynomaly_ops.waiting import NotYet, clock, wait_for

KUBECONFIG_ENV = "PYNOMALY_KUBECONFIG"  # a kubeconfig file to use instead of the stack's EKS cluster

# How infra/workload.py names and labels the API (APP, COLORS, api_labels, deployment_name; its PDB is named
# APP): tests/aws_target/test_aws_kubernetes.py checks they agree, as this library may not import infra/.
APP = "pynomaly"
COLORS = ("blue", "green")
APP_LABEL = "app"
COMPONENT_LABEL = "component"
API_COMPONENT = "api"
COLOR_LABEL = "color"
PDB_NAME = APP

# What a drill leaves on a node it cordons, so the rollback uncordons that node and no other.
CORDONED_BY_DRILL = "pynomaly.io/cordoned-by-drill"
ZONE_LABEL = "topology.kubernetes.io/zone"
MIRROR_POD = "kubernetes.io/config.mirror"  # a static pod's mirror: the kubelet owns it, eviction cannot move it
DAEMON_SET = "DaemonSet"  # its pods run on every node: draining leaves them
RUNNING = "Running"
TOO_MANY_REQUESTS = 429  # the Eviction API's answer when the PodDisruptionBudget does not allow it now
NOT_FOUND = 404

# The token `aws eks get-token` makes: an STS GetCallerIdentity URL presigned with the cluster's name in a signed
# header, which EKS calls to learn who the bearer is.
TOKEN_PREFIX = "k8s-aws-v1."
CLUSTER_ID_HEADER = "x-k8s-aws-id"
TOKEN_URL_EXPIRES_S = 60
TOKEN_REFRESH_S = 600  # EKS accepts a token for 15 minutes (the CLI says 14); a wait may outlast one


class KubernetesError(RuntimeError):
    """The cluster cannot be reached, or the fault cannot be injected (too few ready pods for the budget...)."""


def api_selector(color: str) -> dict[str, str]:
    """The labels of colour ``color``'s API pods (infra/workload.py's ``api_labels``)."""
    return {APP_LABEL: APP, COMPONENT_LABEL: API_COMPONENT, COLOR_LABEL: color}


def deployment_name(color: str) -> str:
    return f"{APP}-{color}"


# --- the cluster client ------------------------------------------------------------------------------------------
def eks_token(cluster_name: str, region: str) -> str:
    """A bearer token for EKS cluster ``cluster_name``, made as ``aws eks get-token`` makes it: an STS
    GetCallerIdentity URL presigned (60 s) with the header ``x-k8s-aws-id: <cluster name>`` signed, base64url
    without padding, prefixed ``k8s-aws-v1.``.

    Presigning sends nothing and GetCallerIdentity needs no IAM permission, so the STS client is boto3's own, not
    one :meth:`Target.client` hands out (whose calls tests/aws_target checks against the runner's policy)."""
    sts = boto3.client("sts", region_name=region)

    def name_the_cluster(request: Any, **_: Any) -> None:
        request.headers[CLUSTER_ID_HEADER] = cluster_name

    sts.meta.events.register("before-sign.sts.GetCallerIdentity", name_the_cluster)
    url = sts.generate_presigned_url("get_caller_identity", Params={}, ExpiresIn=TOKEN_URL_EXPIRES_S, HttpMethod="GET")
    return TOKEN_PREFIX + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def _eks_client(t: Target) -> k8s.ApiClient:
    name = str(t.value(keys.CLUSTER_NAME))
    eks = t.client("eks")
    try:
        found = eks.describe_cluster(name=name)["cluster"]
    except eks.exceptions.ResourceNotFoundException:
        raise KubernetesError(
            f"no EKS cluster {name!r} in {t.region}: the stack's {keys.CLUSTER_NAME} output names it; is the stack's "
            "cluster up (`pulumi up`), and the outputs file current?"
        ) from None
    endpoint, authority = found.get("endpoint"), found.get("certificateAuthority", {}).get("data")
    if not endpoint or not authority:
        raise KubernetesError(
            f"EKS cluster {name} is {found.get('status')} and has no endpoint yet: wait until it is ACTIVE"
        )
    configuration = k8s.Configuration(host=endpoint)
    configuration.ca_cert_data = base64.b64decode(authority).decode("ascii")  # EKS gives the PEM in base64
    configuration.api_key_prefix = {"authorization": "Bearer"}
    made = [0.0]

    def refresh(c: k8s.Configuration) -> None:
        if time.monotonic() - made[0] >= TOKEN_REFRESH_S or "authorization" not in c.api_key:
            c.api_key = {"authorization": eks_token(name, t.region)}
            made[0] = time.monotonic()

    refresh(configuration)
    # Called before every request; the client declares the attribute as None only.
    configuration.refresh_api_key_hook = refresh  # type: ignore[assignment]
    return k8s.ApiClient(configuration)


def _kubeconfig_client(path: str) -> k8s.ApiClient:
    if not os.path.isfile(path):
        raise KubernetesError(
            f"${KUBECONFIG_ENV} names {path!r}, which is not a file: point it at a kubeconfig (`aws eks "
            f"update-kubeconfig --name CLUSTER --kubeconfig FILE`), or unset it to reach the stack's EKS cluster"
        )
    try:
        return kubeconfig.new_client_from_config(config_file=path, persist_config=False)
    except kubeconfig.ConfigException as exc:
        raise KubernetesError(f"the kubeconfig {path} (${KUBECONFIG_ENV}) cannot be used: {exc}") from None


def _api_client(t: Target) -> k8s.ApiClient:
    path = os.environ.get(KUBECONFIG_ENV)
    return _kubeconfig_client(path) if path else _eks_client(t)


def api_client(outputs: str | None = None, stack: str | None = None) -> k8s.ApiClient:
    """A Kubernetes API client of the stack's cluster (or of ``$PYNOMALY_KUBECONFIG``'s current context); the
    caller closes it."""
    return _api_client(resolve(outputs, stack))


@dataclass(frozen=True)
class Cluster:
    core: k8s.CoreV1Api
    apps: k8s.AppsV1Api
    policy: k8s.PolicyV1Api
    namespace: str


def _explain(exc: ApiException) -> str:
    message = exc.reason or ""
    if exc.body:
        try:
            message = json.loads(exc.body).get("message") or message
        except ValueError:
            message = str(exc.body)[:300]
    if exc.status == 401:
        return (
            f"the cluster refused the credentials (401 {message}): check the runner's AWS identity (`aws sts "
            f"get-caller-identity`) or, with ${KUBECONFIG_ENV}, that kubeconfig's user"
        )
    if exc.status == 403:
        return (
            f"the cluster forbids it (403 {message}): the runner's IAM principal needs an EKS access entry that may "
            "list, get, delete and evict pods in the workload's namespace and list and patch nodes"
        )
    return f"the Kubernetes API answered {exc.status} {message}"


@contextmanager
def _connect(t: Target) -> Iterator[Cluster]:
    """The cluster's APIs for the duration of one fault or probe; Kubernetes API errors explained."""
    namespace = str(t.value(keys.WORKLOAD_NAMESPACE))
    api = _api_client(t)
    try:
        yield Cluster(k8s.CoreV1Api(api), k8s.AppsV1Api(api), k8s.PolicyV1Api(api), namespace)
    except ApiException as exc:
        raise KubernetesError(_explain(exc)) from exc
    finally:
        api.close()


# --- the objects, as the API returns them ---------------------------------------------------------------------
def _name(obj: Any) -> str:
    return str(obj.metadata.name)


def _labels(obj: Any) -> dict[str, str]:
    return dict(obj.metadata.labels or {})


def _annotations(obj: Any) -> dict[str, str]:
    return dict(obj.metadata.annotations or {})


def _namespace(obj: Any) -> str:
    return str(obj.metadata.namespace)


def _terminating(pod: Any) -> bool:
    return pod.metadata.deletion_timestamp is not None


def _ready(pod: Any) -> bool:
    """Running, not terminating, and its Ready condition true (what the PodDisruptionBudget counts healthy)."""
    status = pod.status
    if _terminating(pod) or status is None or status.phase != RUNNING:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])


def _node_of(pod: Any) -> str | None:
    return pod.spec.node_name if pod.spec is not None else None


def _cordoned(node: Any) -> bool:
    return bool(node.spec is not None and node.spec.unschedulable)


def _node_ready(node: Any) -> bool:
    conditions = node.status.conditions if node.status is not None else None
    return any(c.type == "Ready" and c.status == "True" for c in conditions or [])


def _selector(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _percent_of(value: int | str, total: int) -> int:
    """An IntOrString of a PodDisruptionBudget: a count, or a percentage of ``total`` rounded up (as the
    disruption controller rounds it)."""
    if isinstance(value, int):
        return value
    if value.endswith("%") and value[:-1].isdigit():
        return -(-int(value[:-1]) * total // 100)
    raise KubernetesError(f"the PodDisruptionBudget has {value!r}, neither a count nor a percentage")


@dataclass(frozen=True)
class Active:
    """The active colour's API Deployment and the PodDisruptionBudget that guards it."""

    color: str
    deployment: str
    selector: dict[str, str]
    desired: int
    ready: int  # the Deployment's status: non-terminating pods with Ready true
    min_available: int  # the budget's minimum of healthy pods, for ``desired``


def _budget(c: Cluster) -> Any:
    found = c.policy.list_namespaced_pod_disruption_budget(c.namespace).items
    pdb = next((p for p in found if _name(p) == PDB_NAME), None)
    if pdb is None:
        raise KubernetesError(
            f"namespace {c.namespace} has no PodDisruptionBudget {PDB_NAME!r} (it has: "
            f"{', '.join(sorted(map(_name, found))) or 'none'}): infra/workload.py declares it with the workload; is "
            f"the stack's workload up and the {keys.WORKLOAD_NAMESPACE} output current?"
        )
    return pdb


def _active(c: Cluster) -> Active:
    """The active colour: the one the PodDisruptionBudget selects (infra/workload.py's ``active_selector``)."""
    pdb = _budget(c)
    selector = dict(pdb.spec.selector.match_labels or {}) if pdb.spec and pdb.spec.selector else {}
    color = selector.get(COLOR_LABEL, "")
    if color not in COLORS or selector != api_selector(color):
        raise KubernetesError(
            f"PodDisruptionBudget {PDB_NAME} in {c.namespace} selects {selector or 'nothing'}, not one colour's "
            f"API pods ({_selector(api_selector('|'.join(COLORS)))}): the workload is not infra/workload.py's"
        )
    name = deployment_name(color)
    try:
        deployment = c.apps.read_namespaced_deployment(name, c.namespace)
    except ApiException as exc:
        if exc.status != NOT_FOUND:
            raise
        raise KubernetesError(f"no Deployment {name} in {c.namespace}, the active colour's ({color})") from None
    spec, status = deployment.spec, deployment.status
    desired = 1 if spec is None or spec.replicas is None else int(spec.replicas)  # the API's default
    ready = int(status.ready_replicas or 0) if status is not None else 0
    budget = pdb.spec
    if budget.min_available is not None:
        minimum = _percent_of(budget.min_available, desired)
    elif budget.max_unavailable is not None:
        minimum = desired - _percent_of(budget.max_unavailable, desired)
    else:
        minimum = 0
    return Active(color, name, selector, desired, ready, max(minimum, 0))


def _api_pods(c: Cluster, a: Active) -> list[Any]:
    """The active colour's API pods, terminating ones included, by name."""
    pods = c.core.list_namespaced_pod(c.namespace, label_selector=_selector(a.selector)).items
    return sorted(pods, key=_name)


def _fully_ready(a: Active, pods: list[Any]) -> str | None:
    """Why the active colour is not fully ready (None: it is): every desired pod ready, and at least the budget."""
    ready = sum(map(_ready, pods))
    if a.desired > 0 and a.ready == a.desired == ready and ready >= a.min_available:
        return None
    return (
        f"{a.deployment}: {a.ready} of {a.desired} replicas ready ({ready} ready pods listed; its "
        f"PodDisruptionBudget's minimum {a.min_available})"
    )


# --- pod-loss -----------------------------------------------------------------------------------------------
def delete_api_pods(
    count: int = 1, grace_period_s: int | None = None, outputs: str | None = None, stack: str | None = None
) -> dict[str, Any]:
    """Delete ``count`` ready API pods of the active colour (``grace_period_s``: their termination grace, default
    the pods' own), as FIS's aws:eks:pod-delete does: deletions, not evictions, so the PodDisruptionBudget does
    not hold them back, and so this refuses to leave fewer ready pods than its minimum. Their Deployment replaces
    them; pass ``deleted`` as ``replaced`` to :func:`wait_for_api_pods_ready`."""
    if count < 1:
        raise KubernetesError(f"delete at least one pod, not {count}")
    t = resolve(outputs, stack)
    with _connect(t) as c:
        a = _active(c)
        pods = _api_pods(c, a)
        ready = [p for p in pods if _ready(p)]
        if len(ready) - count < a.min_available:
            most = max(len(ready) - a.min_available, 0)
            raise KubernetesError(
                f"deleting {count} of {a.deployment}'s {len(ready)} ready pods would leave fewer than its "
                f"PodDisruptionBudget's minimum of {a.min_available}: delete at most {most}, or first wait until "
                f"its pods are ready again (wait_for_api_pods_ready)"
            )
        victims = ready[:count]
        at = time.time()
        for pod in victims:
            try:
                c.core.delete_namespaced_pod(_name(pod), c.namespace, grace_period_seconds=grace_period_s)
            except ApiException as exc:
                if exc.status != NOT_FOUND:  # gone already: lost all the same
                    raise
    return {
        "deployment": a.deployment,
        "color": a.color,
        "namespace": c.namespace,
        "deleted": [_name(p) for p in victims],
        "nodes": {_name(p): _node_of(p) for p in victims},
        "ready": len(ready),
        "min_available": a.min_available,
        "time": at,
    }


# --- node-drain ---------------------------------------------------------------------------------------------
def _busiest(pods: list[Any], nodes: dict[str, Any]) -> str:
    """The schedulable node running the most of ``pods`` (by name, of equals)."""
    counts: dict[str, int] = {}
    for pod in pods:
        node = _node_of(pod)
        if node in nodes and not _terminating(pod) and not _cordoned(nodes[node]):
            counts[node] = counts.get(node, 0) + 1
    if not counts:
        raise KubernetesError("no API pod of the active colour runs on a schedulable node: there is nothing to drain")
    return max(sorted(counts), key=lambda n: counts[n])


def _evictable(pod: Any) -> bool:
    """What a drain evicts: not a DaemonSet's pod, not a mirror pod, not already terminating."""
    owners = pod.metadata.owner_references or []
    return not (any(o.kind == DAEMON_SET for o in owners) or MIRROR_POD in _annotations(pod) or _terminating(pod))


def _evict(c: Cluster, node: str, deadline: float, timeout_s: float) -> list[Any]:
    """Evict every evictable pod on ``node`` through the Eviction API (policy/v1), each again while it answers
    429 (the PodDisruptionBudget allows no disruption now) until ``deadline``. Returns the pods evicted."""
    on_node = c.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
    pending = sorted((p for p in on_node if _evictable(p)), key=lambda p: (_namespace(p), _name(p)))
    evicted: list[Any] = []
    refused: dict[str, str] = {}
    while True:
        for pod in list(pending):
            name, namespace = _name(pod), _namespace(pod)
            body = k8s.V1Eviction(
                api_version="policy/v1", kind="Eviction", metadata=k8s.V1ObjectMeta(name=name, namespace=namespace)
            )
            try:
                c.core.create_namespaced_pod_eviction(name, namespace, body)
            except ApiException as exc:
                if exc.status == TOO_MANY_REQUESTS:
                    refused[f"{namespace}/{name}"] = _explain(exc)
                    continue
                if exc.status != NOT_FOUND:  # gone already: nothing to evict
                    raise
            pending.remove(pod)
            refused.pop(f"{namespace}/{name}", None)
            evicted.append(pod)
        if not pending:
            return evicted
        if time.monotonic() >= deadline:
            raise KubernetesError(
                f"node {node} is cordoned but {len(pending)} of its pods were not evicted after {timeout_s:g}s "
                f"(their PodDisruptionBudget allowed no disruption: {refused}); uncordon_nodes rolls the drain back"
            )
        time.sleep(targets.POLL_INTERVAL_S)


def drain_node(
    name: str | None = None, timeout_s: float = 300, outputs: str | None = None, stack: str | None = None
) -> dict[str, Any]:
    """Drain node ``name`` (default: the one running the most API pods of the active colour): cordon it, marked
    as cordoned by a drill (:func:`uncordon_nodes` rolls back), then evict every pod on it but DaemonSets' and
    mirror pods through the Eviction API, retrying those the PodDisruptionBudget holds back until ``timeout_s``.
    ``api_pods`` are the active colour's pods it evicted (pass them as ``replaced`` to
    :func:`wait_for_api_pods_ready`, the node to :func:`wait_for_node_drained`)."""
    t = resolve(outputs, stack)
    deadline = time.monotonic() + timeout_s
    with _connect(t) as c:
        a = _active(c)
        nodes = {_name(n): n for n in c.core.list_node().items}
        api_pods = _api_pods(c, a)
        node_name = name or _busiest(api_pods, nodes)
        node = nodes.get(node_name)
        if node is None:
            raise KubernetesError(f"no node {node_name!r}; the cluster has: {', '.join(sorted(nodes)) or 'none'}")
        if _cordoned(node) and CORDONED_BY_DRILL not in _annotations(node):
            raise KubernetesError(
                f"node {node_name} is cordoned already, not by a drill: someone is working on it; drain another"
            )
        if not any(_node_ready(n) and not _cordoned(n) for other, n in nodes.items() if other != node_name):
            raise KubernetesError(f"no other ready, schedulable node: {node_name}'s pods would have nowhere to go")
        at = time.time()
        stamp = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        c.core.patch_node(
            node_name, {"metadata": {"annotations": {CORDONED_BY_DRILL: stamp}}, "spec": {"unschedulable": True}}
        )
        evicted = _evict(c, node_name, deadline, timeout_s)
    ours = {_name(p) for p in api_pods}
    return {
        "node": node_name,
        "zone": _labels(node).get(ZONE_LABEL),
        "evicted": [_name(p) for p in evicted],
        "api_pods": [_name(p) for p in evicted if _name(p) in ours and _namespace(p) == c.namespace],
        "deployment": a.deployment,
        "time": at,
    }


def uncordon_nodes(outputs: str | None = None, stack: str | None = None) -> dict[str, Any]:
    """Uncordon every node a drill cordoned (and only those: they carry its annotation), the annotation removed
    (idempotent: a rollback)."""
    t = resolve(outputs, stack)
    with _connect(t) as c:
        marked = sorted(_name(n) for n in c.core.list_node().items if CORDONED_BY_DRILL in _annotations(n))
        for name in marked:
            c.core.patch_node(
                name, {"metadata": {"annotations": {CORDONED_BY_DRILL: None}}, "spec": {"unschedulable": None}}
            )
    return {"uncordoned": marked, "time": time.time()}


# --- probes -------------------------------------------------------------------------------------------------
def api_pods(outputs: str | None = None, stack: str | None = None) -> dict[str, str | None]:
    """The active colour's API pods and the node each runs on (None: not scheduled yet)."""
    with _connect(resolve(outputs, stack)) as c:
        return {_name(p): _node_of(p) for p in _api_pods(c, _active(c))}


def api_pods_ready(outputs: str | None = None, stack: str | None = None) -> bool:
    """The active colour's Deployment has every desired replica ready, and at least its PodDisruptionBudget's
    minimum."""
    with _connect(resolve(outputs, stack)) as c:
        a = _active(c)
        return a.desired > 0 and a.ready == a.desired and a.ready >= a.min_available


def wait_for_api_pods_ready(
    timeout_s: float = 300,
    since: float | None = None,
    replaced: list[str] | None = None,
    outputs: str | None = None,
    stack: str | None = None,
) -> dict[str, Any]:
    """Until the active colour's Deployment is fully ready and none of the pods ``replaced`` (those a fault
    deleted or evicted) is among its pods any more, terminating or not."""
    t, elapsed, gone = resolve(outputs, stack), clock(since), set(replaced or [])
    with _connect(t) as c:

        def settled() -> dict[str, Any]:
            a = _active(c)
            pods = _api_pods(c, a)
            if still := sorted(gone & {_name(p) for p in pods}):
                raise NotYet(f"{', '.join(still)} still among {a.deployment}'s pods")
            if why := _fully_ready(a, pods):
                raise NotYet(why)
            return {"deployment": a.deployment, "ready": a.ready, "pods": [_name(p) for p in pods]}

        done = wait_for("the active colour's API pods ready", settled, timeout_s, targets.POLL_INTERVAL_S)
    return {**done, "seconds": elapsed()}


def nodes_schedulable(outputs: str | None = None, stack: str | None = None) -> bool:
    """No node is cordoned by a drill (a node cordoned by someone else is theirs)."""
    with _connect(resolve(outputs, stack)) as c:
        return not any(_cordoned(n) and CORDONED_BY_DRILL in _annotations(n) for n in c.core.list_node().items)


def wait_for_node_drained(
    node: str,
    timeout_s: float = 300,
    since: float | None = None,
    outputs: str | None = None,
    stack: str | None = None,
) -> dict[str, Any]:
    """Until no API pod of the active colour runs on ``node`` (terminating ones included) and the colour is
    fully ready on the other nodes: the pods have rescheduled."""
    t, elapsed = resolve(outputs, stack), clock(since)
    with _connect(t) as c:

        def drained() -> dict[str, Any]:
            a = _active(c)
            pods = _api_pods(c, a)
            if left := [_name(p) for p in pods if _node_of(p) == node]:
                raise NotYet(f"{', '.join(left)} still on {node}")
            if why := _fully_ready(a, pods):
                raise NotYet(why)
            return {"deployment": a.deployment, "pods": {_name(p): _node_of(p) for p in pods}}

        done = wait_for(f"the API pods off {node} and ready elsewhere", drained, timeout_s, targets.POLL_INTERVAL_S)
    return {"node": node, **done, "seconds": elapsed()}


# --- what a FIS experiment picks from (aws_target/fis.py) ---------------------------------------------------
def ready_api_pods(outputs: str | None = None, stack: str | None = None) -> list[str]:
    """The active colour's ready API pods: those FIS's pod-delete picks one of."""
    with _connect(resolve(outputs, stack)) as c:
        return [_name(p) for p in _api_pods(c, _active(c)) if _ready(p)]


def ready_nodes(outputs: str | None = None, stack: str | None = None) -> list[str]:
    """The cluster's Ready nodes: a node FIS terminates leaves them."""
    with _connect(resolve(outputs, stack)) as c:
        return sorted(_name(n) for n in c.core.list_node().items if _node_ready(n))
