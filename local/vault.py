"""The off-site copy of the local stack's backups: a directory outside its state, as S3 Cross-Region Replication
keeps a region's backups when the region is lost (001/004 Disaster Recovery).

The local S3 (moto) lives in memory and dies with the stack, so the disaster-recovery drill replicates the
backups bucket here before the disaster and puts it back into the rebuilt stack's bucket; ``local down
--purge`` removes the state and database directories, never this one.

Each database cluster gets a copy of its own (``cluster-<system identifier>/``): a stack created afresh later
archives WAL segments under the same names as an earlier cluster's, and one archive mixing two clusters'
timelines cannot be replayed. A rebuilt cluster keeps its identifier, so it goes on in its own copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from local import aws
from local.layout import state_dir_from
from local.recovery import RecoveryError, connect_superuser
from local.secretfile import secret_dir, write_secret
from local.stack import running_stack
from local.wiring import Wiring

VAULT_ENV = "PYNOMALY_BACKUP_VAULT"
INDEX = "index.json"  # key -> {etag, sha256, bytes}: what the vault holds, and what each object was


def vault_dir(state_dir: str | Path | None = None) -> Path:
    """``$PYNOMALY_BACKUP_VAULT``, else ``<state directory>-vault`` beside the state directory."""
    if os.environ.get(VAULT_ENV):
        return Path(os.environ[VAULT_ENV]).resolve()
    state = state_dir_from(None if state_dir is None else Path(state_dir))
    return state.with_name(f"{state.name}-vault")


def _index(vault: Path) -> dict[str, dict[str, Any]]:
    path = vault / INDEX
    return json.loads(path.read_text()) if path.exists() else {}


def _object_path(vault: Path, key: str) -> Path:
    path = (vault / "objects" / key).resolve()
    if not path.is_relative_to(vault / "objects"):
        raise RecoveryError(f"object key {key!r} would be written outside the vault")
    return path


def _system_identifier(wiring: Wiring) -> str:
    with connect_superuser(wiring) as conn:
        return str(conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0])  # type: ignore[index]


def replicate_backups(state_dir: str | None = None) -> dict[str, Any]:
    """Copy every object of the backups bucket the cluster's copy in the vault does not hold yet (or holds
    older content of), as an asynchronous replication pass does; the vault is never pruned, as a replica
    keeps what its source deletes."""
    stack = running_stack(state_dir)
    wiring = stack.wiring
    vault = vault_dir(stack.layout.state_dir) / f"cluster-{_system_identifier(wiring)}"
    s3, bucket = aws.s3(wiring), wiring.backups_bucket
    for d in (vault.parent, vault):
        secret_dir(d)
    started, index, copied, size = time.monotonic(), _index(vault), 0, 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            if index.get(obj["Key"], {}).get("etag") == obj["ETag"]:
                continue
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            path = _object_path(vault, obj["Key"])
            # Backups hold the database (its roles' password hashes) and the encrypted configuration: only
            # their owner reads them, from the moment each file exists; written whole, then renamed.
            write_secret(path, body)
            index[obj["Key"]] = {"etag": obj["ETag"], "sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}
            copied, size = copied + 1, size + len(body)
    write_secret(vault / INDEX, json.dumps(index, indent=1) + "\n")
    return {"vault": str(vault), "objects_copied": copied, "bytes_copied": size, "objects": len(index),
            "seconds": time.monotonic() - started, "time": time.time()}  # fmt: skip


def newest_copy(root: Path, newest_of: str) -> Path:
    """The cluster copy under the vault ``root`` whose newest key under ``newest_of`` is the newest of all (keys
    there are UTC times: the configuration backups')."""
    copies = {c: max((k for k in _index(c) if k.startswith(newest_of)), default="") for c in root.glob("cluster-*")}
    if not any(copies.values()):
        raise RecoveryError(f"no backups under {newest_of} in the vault {root}: nothing to rebuild from"
                            f" (set {VAULT_ENV} to the vault)")  # fmt: skip
    return max(copies, key=lambda c: copies[c])


def vault_objects(vault: Path, prefix: str = "") -> dict[str, Path]:
    """The vault's objects under ``prefix``: key -> file."""
    return {key: _object_path(vault, key) for key in sorted(_index(vault)) if key.startswith(prefix)}


def restore_to_bucket(wiring: Wiring, vault: Path) -> dict[str, Any]:
    """Put every object of the vault back into the (new, empty) backups bucket, each checked against the
    sha256 it was replicated with."""
    if not (vault / INDEX).exists():
        raise RecoveryError(f"no backups in {vault}: nothing to rebuild from (set {VAULT_ENV} to the vault)")
    s3, index, started = aws.s3(wiring), _index(vault), time.monotonic()
    for key, path in vault_objects(vault).items():
        body = path.read_bytes()
        if hashlib.sha256(body).hexdigest() != index[key]["sha256"]:
            raise RecoveryError(f"{path} is not what was replicated (sha256 differs): the vault is damaged")
        s3.put_object(Bucket=wiring.backups_bucket, Key=key, Body=body)
    return {"objects": len(index), "seconds": time.monotonic() - started}
