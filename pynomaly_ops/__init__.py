"""Shared pieces every part of the project imports: the runbook numbers,
the stack outputs model and the ``pynomaly-ops`` command line."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
