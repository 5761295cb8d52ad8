"""Disaster recovery of the local stack (001 "Disaster Recovery", 004 "Disaster Recovery Procedure"): the whole
stack rebuilt from its backups alone, the off-site copy of the backups bucket (local/vault.py).

The configuration comes back from the newest encrypted configuration backup (the same ports, passwords and API
key: every client's settings stay right), the database from the newest base backup and every WAL segment
archived after it (Patroni's custom bootstrap, patroni.yml.j2), then the service starts on it as on any `up`.
What was written after the last archived segment reached the vault is lost: that is the RPO. The queues and
the cache start empty (neither is backed up); the artifacts bucket too (replicate it as the backups are, to
keep it).

On AWS the same procedure is the Pulumi program and snapshot restores, written up in docs/runbooks/README.md;
it is not run automatically.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import httpx

from local import pitr, render, vault
from local.config_backup import CONFIG_PREFIX, SUFFIX, restore_config
from local.layout import Layout, state_dir_from
from local.programs import WAL_ARCHIVE_SERVER
from local.recovery import RecoveryError
from local.stack import Stack, open_stack
from local.wiring import Wiring

SMOKE_SERIES = [1.0, 1.1, 0.9, 1.0, 1.2, 0.8, 1.0, 9.0, 1.0, 1.1, 0.9, 1.0]  # one clear outlier
FIGURES = {"rebuild_from_backups": ("smoke tests failed",)}


def _newest_base_backup(objects: dict[str, Any]) -> str:
    """The newest completed base backup among the vault's objects (by its backup.info's end time)."""
    prefix = f"{Wiring.WAL_ARCHIVE_PREFIX}/{WAL_ARCHIVE_SERVER}/base/"
    infos = [pitr.backup_info(path.read_text(), key) for key, path in objects.items()
             if key.startswith(prefix) and key.endswith("/backup.info")]  # fmt: skip
    done = [i for i in infos if i is not None]
    if not done:
        raise RecoveryError("no completed base backup in the vault: the database cannot be rebuilt from it")
    return max(done, key=lambda i: i["end"])["backup_id"]


def smoke_test(wiring: Wiring) -> bool:
    """What a user does first: /health, and a detection through the load balancer that finds the outlier."""
    base = f"http://{wiring.regional('lb')}"
    headers = {"Authorization": f"Bearer {wiring.layout.secrets['api_key']}"}
    with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
        if client.get("/health").status_code != 200:
            return False
        reply = client.post("/api/v1/detect", json={"series": SMOKE_SERIES})
    return reply.status_code == 200 and [i for i, flag in enumerate(reply.json()["flags"]) if flag] == [7]


def rebuild_from_backups(since: float, state_dir: str | None = None) -> dict[str, Any]:
    """Rebuild the stack in ``state_dir`` (which must be empty: never over a live stack) from the vault alone and
    smoke-test it. ``seconds`` is the RTO from ``since`` (the disaster) to a service that passes the smoke test."""
    directory = state_dir_from(None if state_dir is None else Path(state_dir))
    if (directory / Layout.FILE).exists():
        raise RecoveryError(
            f"{directory} holds a stack already: a rebuild never lands on a live stack;"
            " `pynomaly-ops local down --purge` it first if it is really lost (the vault and the key stay)"
        )
    started = time.monotonic()
    where = vault.newest_copy(vault.vault_dir(directory), CONFIG_PREFIX)  # the cluster last backed up
    objects = vault.vault_objects(where)
    configs = sorted(k for k in objects if k.startswith(CONFIG_PREFIX) and k.endswith(SUFFIX))
    restore_config(objects[configs[-1]].read_bytes(), str(objects[configs[-1]]), directory)
    layout = Layout.load(directory)
    assert layout is not None  # restore_config wrote it
    backup_id = layout.bootstrap_backup = _newest_base_backup(objects)
    layout.save()
    stack = open_stack(directory, logging.getLogger("local").info)
    stack.up(restore=lambda s: vault.restore_to_bucket(s.wiring, where))
    _bootstrapped(stack)
    failed = 0 if smoke_test(stack.wiring) else 1
    figures = dict(zip(FIGURES["rebuild_from_backups"], (failed,), strict=True))
    return {"seconds": time.time() - since, "rebuild_s": time.monotonic() - started, "backup_id": backup_id,
            "figures": figures}  # fmt: skip


def _bootstrapped(stack: Stack) -> None:
    """The database is built: a later restart of a member must not restore again (Patroni bootstraps only an
    empty cluster anyway; the configuration says so too)."""
    stack.layout.bootstrap_backup = None
    stack.layout.save()
    render.write_patroni(stack.layout)


def ensure_rebuilt(state_dir: str | None = None) -> dict[str, Any]:
    """A rollback: rebuild the stack from the vault if a disaster left none (a drill failed or was interrupted
    between the destruction and the rebuild); a stack that is there is left alone."""
    directory = state_dir_from(None if state_dir is None else Path(state_dir))
    if (directory / Layout.FILE).exists():
        return {"rebuilt": False}
    return rebuild_from_backups(time.time(), state_dir) | {"rebuilt": True}
