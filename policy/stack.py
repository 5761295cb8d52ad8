"""The stack a resource belongs to, as the rules see it: its settings, the numbers file, production or not.

Both ways of running the pack build it from the configuration the program ran with. `pulumi preview
--policy-pack policy/` hands a policy pack the stack's configuration in PULUMI_CONFIG, as it hands it to the
program (infra/stack_config.py reads the same); `pynomaly-ops policy check` provides the configuration it
rendered the stack with (:func:`provide`). The settings are then validated by the same model as the program's,
so the tags, the EKS endpoint's CIDRs and the production rules the pack expects are the program's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pulumi.runtime.config import get_config_env

from pynomaly_ops import baselines
from pynomaly_ops.baselines import Baselines
from pynomaly_ops.settings import StackSettings, build, split_namespaces


@dataclass(frozen=True)
class StackContext:
    stack: str
    settings: StackSettings
    numbers: Baselines

    @property
    def production(self) -> bool:
        """A stack named prod: where the resilience rules apply."""
        return self.settings.is_production

    @property
    def tags(self) -> dict[str, str]:
        """The tags infra/ puts on every resource (the settings' definition)."""
        return self.settings.tags


_provided: dict[str, tuple[dict[str, Any], Baselines | None]] = {}
_contexts: dict[str, StackContext] = {}


def stack_of(urn: str) -> str:
    """``urn:pulumi:<stack>::<project>::<type>::<name>`` -> ``<stack>``."""
    return urn.split("::", 1)[0].rsplit(":", 1)[-1]


def provide(stack: str, config: Mapping[str, Any], numbers: Baselines | None = None) -> None:
    """Use ``config`` (``namespace:key`` values, as Pulumi hands them over) and ``numbers`` for ``stack``."""
    _provided[stack] = (dict(config), numbers)
    _contexts.pop(stack, None)


def context(urn: str) -> StackContext:
    """The context of the stack ``urn`` belongs to (built once per stack)."""
    stack = stack_of(urn)
    if stack not in _contexts:
        config, numbers = _provided.get(stack) or (get_config_env(), None)
        project, region = split_namespaces(config)
        _contexts[stack] = StackContext(stack, build(stack, project, region), numbers or baselines.load())
    return _contexts[stack]
