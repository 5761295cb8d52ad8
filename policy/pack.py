"""The policy pack: every rule of the rule modules, mandatory unless marked advisory."""

from __future__ import annotations

from pulumi_policy import EnforcementLevel, Policy, PolicyPack

from policy import advisory, encryption, exposure, instances, observability, resilience, tagging

NAME = "pynomaly-production-safety"
DESCRIPTION = "Keeps every Pynomaly stack production-safe: encryption, exposure, resilience, alarms, tags."
MODULES = (encryption, exposure, instances, resilience, observability, tagging, advisory)

# Each rule once, in the order the modules define them.
POLICIES: list[Policy] = list({id(p): p for m in MODULES for p in vars(m).values() if isinstance(p, Policy)}.values())


def serve() -> None:
    """Serve the pack to the Pulumi engine (blocks: the CLI runs policy/__main__.py as the analyzer)."""
    PolicyPack(NAME, POLICIES, enforcement_level=EnforcementLevel.MANDATORY, description=DESCRIPTION)
