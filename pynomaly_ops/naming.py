"""Resource naming shared by the Pulumi program and the local stack."""

from __future__ import annotations


def resource_name(stack: str, tier: str, role: str) -> str:
    """``<stack>-<tier>-<role>``: the name of every resource the project makes."""
    return f"{stack}-{tier}-{role}"


def component_type(tier: str, name: str) -> str:
    """``pynomaly:<tier>:<Name>``: the type token of a tier's component."""
    return f"pynomaly:{tier}:{name}"
