"""Recover a stack's objects on AWS: the object-restore drill's procedure (001 "Data Corruption"), the
counterparts of local/recovery.py's, on the artifacts bucket's version history (pynomaly_ops/object_versions.py).
Nothing is overwritten: a good version is copied back as a new current one."""

from __future__ import annotations

from typing import Any

from aws_target.target import resolve
from pynomaly_ops import object_versions


def seed_objects(count: int = 20, outputs: str | None = None, stack: str | None = None) -> dict[str, Any]:
    """``count`` objects of known content in the artifacts bucket, under a prefix of their own."""
    t = resolve(outputs, stack)
    return object_versions.seed(t.client("s3"), t.outputs.artifacts_bucket, count)


def restore_objects(prefix: str, before: float, outputs: str | None = None, stack: str | None = None) -> dict[str, Any]:
    """Every key under ``prefix`` back at its newest version older than ``before`` (the corruption's time)."""
    t = resolve(outputs, stack)
    return object_versions.restore(t.client("s3"), t.outputs.artifacts_bucket, prefix, before)


def verify_objects(expected: dict[str, str], outputs: str | None = None, stack: str | None = None) -> dict[str, Any]:
    """Read every object back and compare its sha256 with the good content's."""
    t = resolve(outputs, stack)
    return object_versions.verify(t.client("s3"), t.outputs.artifacts_bucket, expected)


def remove_drill_objects(outputs: str | None = None, stack: str | None = None) -> dict[str, Any]:
    """Delete every version and delete marker the object-restore drill wrote (a rollback: idempotent)."""
    t = resolve(outputs, stack)
    return object_versions.remove(t.client("s3"), t.outputs.artifacts_bucket)
