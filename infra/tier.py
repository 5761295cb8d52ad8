"""What every tier component shares: type token, naming, tags, parenting."""

from __future__ import annotations

from typing import Any

import pulumi

from pynomaly_ops.naming import component_type, resource_name


class Tier(pulumi.ComponentResource):
    """Base of the tier components: ``pynomaly:<tier>:<Name>``.

    Children are created with :attr:`child` options (parented to the
    component) and named with :meth:`name_of` (``<stack>-<tier>-<role>``).
    """

    TIER: str = ""

    def __init__(self, stack: str, tags: dict[str, str], opts: pulumi.ResourceOptions | None = None):
        super().__init__(
            component_type(self.TIER, type(self).__name__), resource_name(stack, self.TIER, "component"), None, opts
        )
        self.stack = stack
        self.tags = {**tags, "Tier": self.TIER}
        self.child = pulumi.ResourceOptions(parent=self)

    def name_of(self, role: str) -> str:
        return resource_name(self.stack, self.TIER, role)

    def tagged(self, role: str, **extra: str) -> dict[str, str]:
        return {**self.tags, "Name": self.name_of(role), **extra}

    def finish(self, **outputs: Any) -> None:
        """Expose ``outputs`` as attributes and register them with the engine."""
        for key, value in outputs.items():
            setattr(self, key, value)
        self.register_outputs(outputs)
