"""The Pulumi-free core every part imports: the runbook numbers, the stack settings and outputs models,
resource names, ports, the service's environment contract, metric names and the alarm catalogue.

It imports no Pulumi and no other part of the project, and does nothing when imported.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
