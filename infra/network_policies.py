"""NetworkPolicies as the workload and the load generators declare them: deny by default, then allow."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.tier import Tier

# The cluster's DNS (CoreDNS in kube-system), which every pod may reach.
DNS_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}
DENY_ALL = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
NOT_METADATA = {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}  # anywhere but IMDS


def port(number: int, protocol: str = "TCP") -> dict[str, Any]:
    return {"port": number, "protocol": protocol}


DNS_PORTS = [port(53, "UDP"), port(53)]


def ip_blocks(cidrs: Sequence[str]) -> list[dict[str, Any]]:
    """One peer per CIDR."""
    return [{"ipBlock": {"cidr": cidr}} for cidr in cidrs]


def declare(
    tier: Tier, namespace: str, app: str, policies: dict[str, dict[str, Any]], opts: pulumi.ResourceOptions
) -> None:
    """One NetworkPolicy per entry (name -> spec), named ``<stack>-<tier>-netpol-<name>``."""
    for name, spec in policies.items():
        k8s.networking.v1.NetworkPolicy(
            tier.name_of(f"netpol-{name}"),
            metadata={"name": name, "namespace": namespace, "labels": {"app": app}},
            spec=spec,
            opts=opts,
        )
