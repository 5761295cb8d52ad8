"""A fake of the EKS cluster's Kubernetes API, in-process, for aws_target/kubernetes.py's tests and the EKS drills'
runs (tests/drills/test_drill_runs.py): no cluster exists on this machine (no kube-apiserver, no Docker).

An HTTP server on 127.0.0.1 answers the few endpoints the library calls, with objects shaped as the real API
returns them (the real ``kubernetes`` client deserializes them): list, get and delete pods, list and patch nodes,
get Deployments, list PodDisruptionBudgets, and create pods' evictions. Behind them, just enough of the
controllers: a Deployment replaces a pod it lost on the schedulable node with the fewest of its pods, the
replacement ready after ``ready_after_s``; a deleted or evicted pod terminates for ``terminating_s`` (0 with a
zero grace period); an eviction answers 429 when the pod is healthy and the budget would fall below its
``minAvailable``, and deletes the pod otherwise. Requests need the kubeconfig's bearer token. It is a fake: no
admission, no watches, equality label selectors and the ``spec.nodeName`` field selector only.

:func:`serving` starts one with the stack's workload as infra/workload.py deploys it (:func:`workload`).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import aws_testkit as kit
import yaml

from aws_target import kubernetes as kube

TOKEN = "fake-eks-token"
CREATED = "2026-01-01T00:00:00Z"
MERGE_PATCHES = ("application/strategic-merge-patch+json", "application/merge-patch+json")


@dataclass
class Pod:
    namespace: str
    name: str
    labels: dict[str, str]
    node: str | None
    owner: str | None = None  # the controller's kind: "ReplicaSet", "DaemonSet"...
    deployment: str | None = None  # the Deployment that replaces it when it is lost
    annotations: dict[str, str] = field(default_factory=dict)
    ready_at: float | None = 0.0  # monotonic; None: never ready
    deleted_at: float | None = None  # monotonic, when it started terminating
    gone_at: float | None = None  # monotonic, when it is removed

    def ready(self, now: float) -> bool:
        return self.deleted_at is None and self.node is not None and self.ready_at is not None and now >= self.ready_at


@dataclass
class Deployment:
    namespace: str
    name: str
    labels: dict[str, str]
    replicas: int


@dataclass
class Budget:
    namespace: str
    name: str
    selector: dict[str, str]
    min_available: int


class FakeCluster:
    """The cluster's state and the HTTP server answering for it; ``requests``, ``evictions`` (pod, HTTP status)
    and ``deletions`` (pod, grace period) record what the client did."""

    def __init__(self, ready_after_s: float = 0.05, terminating_s: float = 0.0, token: str = TOKEN) -> None:
        self.ready_after_s, self.terminating_s, self.token = ready_after_s, terminating_s, token
        self.nodes: dict[str, dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], Pod] = {}
        self.deployments: dict[tuple[str, str], Deployment] = {}
        self.budgets: dict[tuple[str, str], Budget] = {}
        self.requests: list[tuple[str, str]] = []
        self.evictions: list[tuple[str, int]] = []
        self.deletions: list[tuple[str, int | None]] = []
        self.lock = threading.RLock()
        self._serial = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None

    # --- the state ------------------------------------------------------------------------------------------
    def add_node(self, name: str, zone: str, unschedulable: bool = False, ready: bool = True) -> None:
        self.nodes[name] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone},
                "annotations": {},
                "creationTimestamp": CREATED,
            },
            "spec": {"unschedulable": True} if unschedulable else {},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
        }

    def add_pod(self, namespace: str, name: str, node: str | None, labels: dict[str, str], **extra: Any) -> Pod:
        pod = self.pods[(namespace, name)] = Pod(namespace, name, dict(labels), node, **extra)
        return pod

    def add_deployment(self, namespace: str, name: str, labels: dict[str, str], on: list[str]) -> list[str]:
        """A Deployment with one ready pod on each node of ``on`` (as many replicas)."""
        self.deployments[(namespace, name)] = Deployment(namespace, name, dict(labels), len(on))
        return [self._replica(namespace, name, labels, node, ready_at=0.0).name for node in on]

    def add_budget(self, namespace: str, name: str, selector: dict[str, str], min_available: int) -> None:
        self.budgets[(namespace, name)] = Budget(namespace, name, dict(selector), min_available)

    def _replica(self, namespace: str, deployment: str, labels: dict[str, str], node: str | None, ready_at: float):
        name = f"{deployment}-7d9f8c6b5-{next(self._serial):05d}"
        return self.add_pod(namespace, name, node, labels, owner="ReplicaSet", deployment=deployment, ready_at=ready_at)

    def pods_on(self, node: str) -> list[str]:
        with self.lock:
            self._reconcile()
            return sorted(p.name for p in self.pods.values() if p.node == node)

    def pods_of(self, deployment: str) -> list[str]:
        """The Deployment's pods, terminating ones left out."""
        with self.lock:
            self._reconcile()
            return sorted(p.name for p in self.pods.values() if p.deployment == deployment and p.deleted_at is None)

    def delete_pod(self, namespace: str, name: str) -> None:
        """A pod deleted from outside the API (what FIS's aws:eks:pod-delete does, in the drills' tests)."""
        with self.lock:
            self._terminate(self.pods[(namespace, name)], grace=None)

    def cordoned(self, node: str) -> bool:
        return bool(self.nodes[node]["spec"].get("unschedulable"))

    def _matches(self, labels: dict[str, str], selector: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in selector.items())

    def _reconcile(self) -> None:
        """The controllers: terminated pods removed, lost replicas replaced."""
        now = time.monotonic()
        for key, pod in list(self.pods.items()):
            if pod.gone_at is not None and now >= pod.gone_at:
                del self.pods[key]
        for d in self.deployments.values():
            mine = [p for p in self.pods.values() if p.deployment == d.name and p.deleted_at is None]
            for _ in range(d.replicas - len(mine)):
                self._replica(d.namespace, d.name, d.labels, self._place(d), ready_at=now + self.ready_after_s)

    def _place(self, d: Deployment) -> str | None:
        """The scheduler: the ready, schedulable node with the fewest of the Deployment's pods."""
        free = [n for n, node in self.nodes.items() if not node["spec"].get("unschedulable")]
        load = {n: sum(p.node == n and p.deployment == d.name for p in self.pods.values()) for n in free}
        return min(sorted(load), key=lambda n: load[n]) if load else None

    def _terminate(self, pod: Pod, grace: int | None) -> None:
        now = time.monotonic()
        pod.deleted_at = now
        pod.gone_at = now + (0.0 if grace == 0 else self.terminating_s)

    def _healthy(self, budget: Budget, now: float) -> int:
        return sum(
            p.ready(now)
            for p in self.pods.values()
            if p.namespace == budget.namespace and self._matches(p.labels, budget.selector)
        )

    # --- the objects as the API returns them ----------------------------------------------------------------
    def _pod_json(self, pod: Pod, now: float) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "name": pod.name,
            "namespace": pod.namespace,
            "uid": f"uid-{pod.name}",
            "labels": pod.labels,
            "annotations": pod.annotations,
            "creationTimestamp": CREATED,
        }
        if pod.owner:
            owner = pod.deployment or "owner"
            metadata["ownerReferences"] = [
                {"apiVersion": "apps/v1", "kind": pod.owner, "name": owner, "uid": f"uid-{owner}", "controller": True}
            ]
        if pod.deleted_at is not None:
            metadata["deletionTimestamp"] = CREATED
        ready = pod.ready(now)
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": {"nodeName": pod.node, "containers": [{"name": "main", "image": "example/app:1"}]},
            "status": {
                "phase": "Running" if pod.node else "Pending",
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            },
        }

    def _deployment_json(self, d: Deployment, now: float) -> dict[str, Any]:
        live = [p for p in self.pods.values() if p.deployment == d.name and p.deleted_at is None]
        ready = sum(p.ready(now) for p in live)
        status: dict[str, Any] = {"observedGeneration": 1, "replicas": len(live), "updatedReplicas": len(live)}
        if ready:  # the API leaves zero counts out
            status |= {"readyReplicas": ready, "availableReplicas": ready}
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": d.name, "namespace": d.namespace, "labels": d.labels, "generation": 1},
            "spec": {
                "replicas": d.replicas,
                "selector": {"matchLabels": d.labels},
                "template": {
                    "metadata": {"labels": d.labels},
                    "spec": {"containers": [{"name": "main", "image": "example/app:1"}]},
                },
            },
            "status": status,
        }

    def _budget_json(self, b: Budget, now: float) -> dict[str, Any]:
        healthy = self._healthy(b, now)
        expected = sum(p.namespace == b.namespace and self._matches(p.labels, b.selector) for p in self.pods.values())
        return {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": b.name, "namespace": b.namespace},
            "spec": {"minAvailable": b.min_available, "selector": {"matchLabels": b.selector}},
            "status": {
                "currentHealthy": healthy,
                "desiredHealthy": b.min_available,
                "disruptionsAllowed": max(healthy - b.min_available, 0),
                "expectedPods": expected,
                "observedGeneration": 1,
            },
        }

    # --- the API --------------------------------------------------------------------------------------------
    def handle(self, method: str, url: str, headers: Any, body: bytes) -> tuple[int, dict[str, Any]]:
        if headers.get("Authorization") != f"Bearer {self.token}":
            return _status(401, "Unauthorized", "Unauthorized")
        parsed = urlparse(url)
        query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
        path = parsed.path
        with self.lock:
            self.requests.append((method, path))
            self._reconcile()
            now = time.monotonic()
            route = _route(method, path)
            if route is None:
                return _status(404, "NotFound", f"the fake has no {method} {path}")
            kind, params = route
            return getattr(self, f"_{kind}")(now, query, headers, body, **params)

    def _list_pods(self, now, query, headers, body, namespace=None):
        selector = _labels(query.get("labelSelector", ""))
        node = _node_selector(query.get("fieldSelector", ""))
        items = [
            self._pod_json(p, now)
            for p in sorted(self.pods.values(), key=lambda p: (p.namespace, p.name))
            if (namespace is None or p.namespace == namespace)
            and self._matches(p.labels, selector)
            and (node is None or p.node == node)
        ]
        return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}

    def _get_pod(self, now, query, headers, body, namespace, name):
        pod = self.pods.get((namespace, name))
        return (200, self._pod_json(pod, now)) if pod else _status(404, "NotFound", f'pods "{name}" not found')

    def _delete_pod(self, now, query, headers, body, namespace, name):
        pod = self.pods.get((namespace, name))
        if pod is None:
            return _status(404, "NotFound", f'pods "{name}" not found')
        options = json.loads(body or b"{}")
        grace = options.get("gracePeriodSeconds", query.get("gracePeriodSeconds"))
        grace = None if grace is None else int(grace)
        self.deletions.append((name, grace))
        self._terminate(pod, grace)
        answer = self._pod_json(pod, now)
        self._reconcile()
        return 200, answer

    def _evict_pod(self, now, query, headers, body, namespace, name):
        pod = self.pods.get((namespace, name))
        if pod is None:
            return _status(404, "NotFound", f'pods "{name}" not found')
        eviction = json.loads(body or b"{}")
        if eviction.get("kind") != "Eviction" or eviction.get("metadata", {}).get("name") != name:
            return _status(400, "BadRequest", f"not an eviction of {name}: {eviction}")
        for b in self.budgets.values():
            if b.namespace != namespace or not self._matches(pod.labels, b.selector) or not pod.ready(now):
                continue
            healthy = self._healthy(b, now)
            if healthy - 1 < b.min_available:
                self.evictions.append((name, 429))
                answer = _status(
                    429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget."
                )
                answer[1]["details"] = {
                    "causes": [
                        {
                            "reason": "DisruptionBudget",
                            "message": f"The disruption budget {b.name} needs {b.min_available} healthy pods and "
                            f"has {healthy} currently",
                        }
                    ]
                }
                return answer
        self.evictions.append((name, 201))
        self._terminate(pod, None)
        self._reconcile()
        return 201, {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success", "code": 201}

    def _list_nodes(self, now, query, headers, body):
        return 200, {"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": list(self.nodes.values())}

    def _patch_node(self, now, query, headers, body, name):
        if name not in self.nodes:
            return _status(404, "NotFound", f'nodes "{name}" not found')
        if headers.get("Content-Type") not in MERGE_PATCHES:
            return _status(415, "UnsupportedMediaType", f"the fake merges patches only, not {headers['Content-Type']}")
        _merge(self.nodes[name], json.loads(body))
        return 200, self.nodes[name]

    def _get_deployment(self, now, query, headers, body, namespace, name):
        d = self.deployments.get((namespace, name))
        if d is None:
            return _status(404, "NotFound", f'deployments.apps "{name}" not found')
        return 200, self._deployment_json(d, now)

    def _list_budgets(self, now, query, headers, body, namespace):
        items = [self._budget_json(b, now) for b in self.budgets.values() if b.namespace == namespace]
        return 200, {"apiVersion": "policy/v1", "kind": "PodDisruptionBudgetList", "metadata": {}, "items": items}

    # --- the server -----------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeCluster:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, document = fake.handle(self.command, self.path, self.headers, body)
                data = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _answer

            def log_message(self, *args: Any) -> None:
                pass

        server = self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def write_kubeconfig(self, path: Path, token: str | None = None) -> str:
        """A kubeconfig whose current context is this fake, with a bearer token (``token``: another one)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake-eks", "cluster": {"server": self.url}}],
            "users": [{"name": "drill", "user": {"token": token or self.token}}],
            "contexts": [{"name": "fake-eks", "context": {"cluster": "fake-eks", "user": "drill"}}],
            "current-context": "fake-eks",
        }
        path.write_text(yaml.safe_dump(config))
        return str(path)


ROUTES = [
    ("GET", r"/api/v1/pods", "list_pods"),
    ("GET", r"/api/v1/namespaces/(?P<namespace>[^/]+)/pods", "list_pods"),
    ("GET", r"/api/v1/namespaces/(?P<namespace>[^/]+)/pods/(?P<name>[^/]+)", "get_pod"),
    ("DELETE", r"/api/v1/namespaces/(?P<namespace>[^/]+)/pods/(?P<name>[^/]+)", "delete_pod"),
    ("POST", r"/api/v1/namespaces/(?P<namespace>[^/]+)/pods/(?P<name>[^/]+)/eviction", "evict_pod"),
    ("GET", r"/api/v1/nodes", "list_nodes"),
    ("PATCH", r"/api/v1/nodes/(?P<name>[^/]+)", "patch_node"),
    ("GET", r"/apis/apps/v1/namespaces/(?P<namespace>[^/]+)/deployments/(?P<name>[^/]+)", "get_deployment"),
    ("GET", r"/apis/policy/v1/namespaces/(?P<namespace>[^/]+)/poddisruptionbudgets", "list_budgets"),
]


def _route(method: str, path: str) -> tuple[str, dict[str, str]] | None:
    for verb, pattern, kind in ROUTES:
        if verb == method and (found := re.fullmatch(pattern, path)):
            return kind, found.groupdict()
    return None


def _status(code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
    return code, {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _labels(selector: str) -> dict[str, str]:
    """An equality-based label selector (``a=b,c=d``); the fake knows no other."""
    pairs = [term.split("=", 1) for term in selector.split(",") if term]
    assert all(len(p) == 2 and "!" not in p[0] for p in pairs), f"the fake knows equality selectors only: {selector}"
    return dict((k, v) for k, v in pairs)


def _node_selector(selector: str) -> str | None:
    if not selector:
        return None
    key, _, value = selector.partition("=")
    assert key == "spec.nodeName", f"the fake knows the spec.nodeName field selector only: {selector}"
    return value


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """A JSON merge patch (a strategic merge of maps and scalars is the same): null removes a key."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            _merge(target.setdefault(key, {}), value)
        else:
            target[key] = value


# --- the stack's workload ---------------------------------------------------------------------------------------
NAMESPACE = "pynomaly-drill"  # the stack's workload_namespace output
ACTIVE, IDLE = "green", "blue"  # the active colour not the first: found, not assumed
WORKER = {"app": "pynomaly", "component": "worker"}


def workload(fake: FakeCluster) -> dict[str, list[str]]:
    """The stack's workload as infra/workload.py declares it, on four nodes; returns each Deployment's pods:

    - node-a: two active (green) API pods, a worker, a DaemonSet's pod and a mirror pod;
    - node-b: one active API pod and three of the idle colour's (more API pods than node-a, of the wrong colour);
    - node-c: four workers (the most pods); node-d: cordoned by someone else, empty.
    """
    for name, zone in (("node-a", "a"), ("node-b", "b"), ("node-c", "c"), ("node-d", "a")):
        fake.add_node(name, f"{kit.REGION}{zone}", unschedulable=name == "node-d")
    pods = {
        ACTIVE: fake.add_deployment(
            NAMESPACE, kube.deployment_name(ACTIVE), kube.api_selector(ACTIVE), ["node-a", "node-a", "node-b"]
        ),
        IDLE: fake.add_deployment(NAMESPACE, kube.deployment_name(IDLE), kube.api_selector(IDLE), ["node-b"] * 3),
        "worker": fake.add_deployment(NAMESPACE, "pynomaly-worker", WORKER, ["node-a", *["node-c"] * 4]),
    }
    fake.add_budget(NAMESPACE, kube.PDB_NAME, kube.api_selector(ACTIVE), min_available=2)  # scaling.pods_min - 1
    fake.add_budget(NAMESPACE, "pynomaly-other", kube.api_selector(IDLE), min_available=3)  # not the workload's
    for node in ("node-a", "node-b", "node-c"):
        fake.add_pod("kube-system", f"aws-node-{node}", node, {"k8s-app": "aws-node"}, owner="DaemonSet")
    fake.add_pod("kube-system", "static-node-a", "node-a", {}, annotations={kube.MIRROR_POD: "hash"})
    return pods


@contextmanager
def serving(kubeconfig: Path, **options: Any) -> Iterator[FakeCluster]:
    """A fake (``options``: ready_after_s, terminating_s...) with the stack's :func:`workload`, answering until the
    block ends, and a kubeconfig of it written to ``kubeconfig`` (for $PYNOMALY_KUBECONFIG)."""
    fake = FakeCluster(**options)
    workload(fake)
    fake.start()
    try:
        fake.write_kubeconfig(kubeconfig)
        yield fake
    finally:
        fake.stop()
