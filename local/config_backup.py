"""The stack's configuration backed up, encrypted, to the backups bucket (001 "Backup and Recovery": what it does
by hand for Helm values, Kubernetes objects and secrets).

For the local stack the configuration is its recorded layout (ports, passwords, API key: ``stack.json``) and
its outputs; a Pulumi stack's is ``pulumi stack export`` and its outputs (not built yet: the AWS target). The
bundle is encrypted (Fernet: AES-128-CBC with an HMAC) with a key kept outside the state directory and never
in the bucket: ``$PYNOMALY_BACKUP_KEY_FILE``, else ``~/.config/pynomaly-ops/backup.key``, made on first use.
Lose the key and the backups are unreadable: keep a copy of it where you keep other recovery secrets.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from local import aws
from local.layout import Layout
from local.recovery import RecoveryError
from local.secretfile import write_secret
from local.stack import running_stack

KEY_ENV = "PYNOMALY_BACKUP_KEY_FILE"
CONFIG_PREFIX = "config/"
SUFFIX = ".json.fernet"
FILES = (Layout.FILE, "outputs.json")  # the layout, and the outputs every client reads
FIGURES = {"verify_config_backup": ("config files compared", "config files differing")}


def key_file() -> Path:
    return Path(os.environ.get(KEY_ENV) or Path.home() / ".config" / "pynomaly-ops" / "backup.key")


def _fernet(create: bool) -> Fernet:
    path = key_file()
    if not path.exists():
        if not create:
            raise RecoveryError(
                f"no backup key at {path}: configuration backups can only be read with the key they were"
                f" encrypted with; put it back there (or point {KEY_ENV} at it)"
            )
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_secret(path, Fernet.generate_key())
    return Fernet(path.read_bytes().strip())


def _decrypt(token: bytes, where: str) -> dict[str, Any]:
    try:
        return json.loads(_fernet(create=False).decrypt(token))
    except InvalidToken:
        raise RecoveryError(
            f"{where} cannot be decrypted with the key in {key_file()}: it was made with another key, or damaged"
        ) from None


def config_backup(state_dir: str | None = None) -> dict[str, Any]:
    """The stack's configuration files, bundled and encrypted, to ``config/<UTC time>.json.fernet``."""
    stack = running_stack(state_dir)
    wiring, started, at = stack.wiring, time.monotonic(), time.time()
    files = {name: (stack.layout.state_dir / name).read_text() for name in FILES}
    token = _fernet(create=True).encrypt(json.dumps({"taken_at": at, "files": files}).encode())
    key = f"{CONFIG_PREFIX}{datetime.fromtimestamp(at, UTC).strftime('%Y%m%dT%H%M%S%fZ')}{SUFFIX}"
    aws.s3(wiring).put_object(Bucket=wiring.backups_bucket, Key=key, Body=token)
    return {"key": key, "files": len(files), "bytes": len(token), "seconds": time.monotonic() - started, "time": at}


def verify_config_backup(key: str | None = None, state_dir: str | None = None) -> dict[str, Any]:
    """Fetch the configuration backup (the newest by default), decrypt it and compare each file with the live
    one: a restore would bring back exactly this configuration."""
    stack = running_stack(state_dir)
    s3, bucket = aws.s3(stack.wiring), stack.wiring.backups_bucket
    if key is None:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=CONFIG_PREFIX)
        keys = sorted(o["Key"] for page in pages for o in page.get("Contents", []) if o["Key"].endswith(SUFFIX))
        if not keys:
            raise RecoveryError(f"no configuration backup in s3://{bucket}/{CONFIG_PREFIX}: take one first")
        key = keys[-1]  # keys are UTC times
    started = time.monotonic()
    bundle = _decrypt(s3.get_object(Bucket=bucket, Key=key)["Body"].read(), f"s3://{bucket}/{key}")
    live = {name: (stack.layout.state_dir / name).read_text() for name in FILES}
    differing = sorted(n for n in live.keys() | bundle["files"].keys() if live.get(n) != bundle["files"].get(n))
    figures = dict(zip(FIGURES["verify_config_backup"], (len(live), len(differing)), strict=True))
    return {"key": key, "seconds": time.monotonic() - started, "figures": figures, "differing": differing}


def restore_config(token: bytes, where: str, state_dir: Path) -> list[str]:
    """Write a configuration backup's files into ``state_dir`` (a new one: never over a live stack's)."""
    if (state_dir / Layout.FILE).exists():
        raise RecoveryError(f"{state_dir} holds a stack already: a restore never overwrites a live configuration")
    bundle = _decrypt(token, where)
    state_dir.mkdir(parents=True, exist_ok=True)
    for name, text in bundle["files"].items():
        if name not in FILES:
            raise RecoveryError(f"{where} holds {name!r}, not a configuration file of a local stack")
        write_secret(state_dir / name, text)  # the layout holds passwords
    return sorted(bundle["files"])
