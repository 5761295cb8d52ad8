"""Which stack: its outputs, read from a saved ``pulumi stack output --json`` or through the Pulumi CLI.

Every function of the AWS fault library takes ``outputs`` (a file) and ``stack`` (a name); without either,
``$PYNOMALY_AWS_OUTPUTS`` and ``$PYNOMALY_AWS_STACK`` name them (a Chaos Toolkit experiment's configuration
sets them, as ``$PYNOMALY_LOCAL_STATE`` names the local stack). Every error says what is missing and how to
get it.
"""

from __future__ import annotations

import os
from typing import Any

from pynomaly_ops import outputs as keys
from pynomaly_ops.outputs import StackOutputs
from pynomaly_ops.stack_outputs import OutputsError, from_cli, from_file

OUTPUTS_ENV = "PYNOMALY_AWS_OUTPUTS"
STACK_ENV = "PYNOMALY_AWS_STACK"
REGION_ENVS = ("AWS_REGION", "AWS_DEFAULT_REGION")  # boto3's own, where the outputs carry no region


def read(outputs: str | None = None, stack: str | None = None) -> StackOutputs:
    """The stack's outputs: the file ``outputs`` if given, else stack ``stack``'s through the Pulumi CLI."""
    outputs = outputs or os.environ.get(OUTPUTS_ENV) or None
    stack = stack or os.environ.get(STACK_ENV) or None
    if outputs:
        return from_file(outputs)
    if stack:
        return from_cli(stack)
    raise OutputsError(
        f"no stack named: pass stack=NAME (the Pulumi CLI reads its outputs) or outputs=FILE (a saved "
        f"`pulumi stack output --json --stack NAME`), or set ${STACK_ENV} or ${OUTPUTS_ENV}"
    )


def _constant(key: str) -> str:
    """The name pynomaly_ops/outputs.py gives ``key`` (what infra/__main__.py exports it by)."""
    return next((name for name, value in vars(keys).items() if name.isupper() and value == key), key.upper())


def value(outputs: StackOutputs, key: str) -> Any:
    """Output ``key``, which the AWS fault library needs; an older stack that does not export it is named."""
    found = getattr(outputs, key, None) if key in StackOutputs.model_fields else (outputs.model_extra or {}).get(key)
    if found in (None, "", [], {}):
        raise OutputsError(
            f"the stack's outputs have no {key!r}, which the AWS fault library needs: infra/__main__.py exports it "
            f"(`pulumi.export(keys.{_constant(key)}, ...)`); run `pulumi up` on the stack to add it"
        )
    return found


def region(outputs: StackOutputs) -> str:
    """The stack's region: its ``region`` output, else boto3's environment (``$AWS_REGION``)."""
    found = (outputs.model_extra or {}).get(keys.REGION) or next(filter(None, map(os.environ.get, REGION_ENVS)), None)
    if not found:
        raise OutputsError(
            f"no region for the stack: its outputs have no {keys.REGION!r} (exported by infra/__main__.py since the "
            "AWS fault library; `pulumi up` adds it) and $AWS_REGION is not set"
        )
    return str(found)
