"""Objects of a versioned bucket as the object-restore drill breaks and restores them (001 "Data Corruption").

The same procedure on every target: the local stack's S3 stand-in (local/recovery.py, local/faults.py) and a
stack's artifacts bucket (aws_target/). Each function takes an S3 client (boto3's) and the bucket; none
overwrites a version: a restore copies the good version as a new current one and keeps the history.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import time
from typing import Any

DRILL_OBJECTS = "drills/object-restore/"  # the object-restore drill's own objects in the artifacts bucket
CORRUPTED_BODY = b"\x00corrupted\x00"
# The figures each procedure counts (a drill's objectives read them; tests/drills check they exist).
FIGURES = {
    "restore_objects": ("objects restored", "objects without a good version"),
    "verify_objects": ("objects differing from their last good version",),
}


class NothingToCorrupt(LookupError):
    """No object under the prefix: the fault would break nothing."""


def seed(s3: Any, bucket: str, count: int) -> dict[str, Any]:
    """``count`` objects of known content under a prefix of their own below :data:`DRILL_OBJECTS`; returns
    the prefix and each key's sha256 (``expected``)."""
    prefix = f"{DRILL_OBJECTS}{secrets.token_hex(4)}/"
    expected = {}
    for i in range(count):
        body = json.dumps({"object": i, "content": secrets.token_hex(64)}).encode()
        key = f"{prefix}result-{i:03d}.json"
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        expected[key] = hashlib.sha256(body).hexdigest()
    return {"bucket": bucket, "prefix": prefix, "expected": expected, "time": time.time()}


def corrupt(s3: Any, bucket: str, prefix: str) -> dict[str, Any]:
    """Of the objects under ``prefix``, every other one deleted (a delete marker) and the rest overwritten with
    garbage. Starts on a whole second: S3 dates versions to the second, and the restore tells good versions
    from bad by that date (the returned ``time``)."""
    keys = sorted(o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                  for o in page.get("Contents", []))  # fmt: skip
    if not keys:
        raise NothingToCorrupt(f"no objects under s3://{bucket}/{prefix} to corrupt")
    at = math.floor(time.time()) + 1
    time.sleep(max(0.0, at - time.time()))  # to the next whole second (see above), not a wait for a state
    deleted, overwritten = keys[::2], keys[1::2]
    for key in deleted:
        s3.delete_object(Bucket=bucket, Key=key)
    for key in overwritten:
        s3.put_object(Bucket=bucket, Key=key, Body=CORRUPTED_BODY)
    return {"name": f"s3://{bucket}/{prefix}", "deleted": len(deleted), "overwritten": len(overwritten), "time": at}


def versions(s3: Any, bucket: str, prefix: str) -> dict[str, list[dict[str, Any]]]:
    """Every version and delete marker under ``prefix``, by key, newest first."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for kind in ("Versions", "DeleteMarkers"):
            for v in page.get(kind, []):
                by_key.setdefault(v["Key"], []).append(v | {"DeleteMarker": kind == "DeleteMarkers"})
    for found in by_key.values():
        found.sort(key=lambda v: v["LastModified"], reverse=True)
    return by_key


def restore(s3: Any, bucket: str, prefix: str, before: float) -> dict[str, Any]:
    """Every key under ``prefix`` whose current content is not its newest version older than ``before`` (the
    corruption's time), or that is deleted, gets that version back, copied as a new current version (the
    history is kept). Idempotent: a key already restored is left alone. ``seconds`` is the restore's RTO."""
    started = time.monotonic()
    restored, unrecoverable = [], []
    for key, found in sorted(versions(s3, bucket, prefix).items()):
        good = next((v for v in found if v["LastModified"].timestamp() < before and not v["DeleteMarker"]), None)
        current = next(v for v in found if v["IsLatest"])
        if good is not None and not current["DeleteMarker"] and current["ETag"] == good["ETag"]:
            continue  # untouched, or restored already: the same content is current
        if good is None:
            unrecoverable.append(key)
            continue
        source = {"Bucket": bucket, "Key": key, "VersionId": good["VersionId"]}
        s3.copy_object(Bucket=bucket, Key=key, CopySource=source)
        restored.append(key)
    figures = dict(zip(FIGURES["restore_objects"], (len(restored), len(unrecoverable)), strict=True))
    return {"seconds": time.monotonic() - started, "figures": figures, "restored": restored}


def verify(s3: Any, bucket: str, expected: dict[str, str]) -> dict[str, Any]:
    """Read every object back and compare its sha256 with the good content's."""
    differing = []
    for key, digest in sorted(expected.items()):
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            differing.append(key)
            continue
        if hashlib.sha256(body).hexdigest() != digest:
            differing.append(key)
    return {"figures": dict(zip(FIGURES["verify_objects"], (len(differing),), strict=True)), "differing": differing}


def remove(s3: Any, bucket: str, prefix: str = DRILL_OBJECTS) -> dict[str, Any]:
    """Delete every version and delete marker under ``prefix`` (the drill's own objects; idempotent)."""
    removed = 0
    for key, found in versions(s3, bucket, prefix).items():
        for v in found:
            s3.delete_object(Bucket=bucket, Key=key, VersionId=v["VersionId"])
            removed += 1
    return {"versions_removed": removed}
