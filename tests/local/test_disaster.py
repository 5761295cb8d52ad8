"""The pieces of a rebuild against a real local stack: the configuration's encrypted backup comes back exactly
and only with its key; the off-site copy refuses damaged objects; a rebuild never lands on a live stack. (The
whole rebuild runs as the disaster-recovery drill, in tests/drills/test_drill_runs.py.)"""

from __future__ import annotations

import json

import pytest
from conftest import aws, cli

from local import config_backup, disaster, vault
from local.recovery import RecoveryError
from local.stack import running_stack

pytestmark = pytest.mark.integration


def test_the_configuration_backup_is_encrypted_and_restores_every_file_exactly(running):
    taken = config_backup.config_backup(running.state)
    wiring = running_stack(running.state).wiring
    body = aws(running, "s3").get_object(Bucket=wiring.backups_bucket, Key=taken["key"])["Body"].read()
    assert wiring.layout.secrets["postgres_password"].encode() not in body  # no secret in the clear
    verified = config_backup.verify_config_backup(taken["key"], running.state)
    assert verified["figures"] == {"config files compared": 2, "config files differing": 0}


def test_a_configuration_backup_is_unreadable_without_its_key(running, tmp_path, monkeypatch):
    taken = config_backup.config_backup(running.state)
    monkeypatch.setenv(config_backup.KEY_ENV, str(tmp_path / "another.key"))
    with pytest.raises(RecoveryError, match=r"no backup key at .*another\.key"):
        config_backup.verify_config_backup(taken["key"], running.state)
    config_backup._fernet(create=True)  # a key, but not the one it was encrypted with
    with pytest.raises(RecoveryError, match=r"cannot be decrypted with the key in .*another\.key"):
        config_backup.verify_config_backup(taken["key"], running.state)


def test_a_changed_live_file_is_counted_as_differing(running):
    taken = config_backup.config_backup(running.state)
    outputs = running.state_dir / "outputs.json"
    original = outputs.read_text()
    try:
        outputs.write_text(json.dumps(json.loads(original) | {"api_key": "changed"}, indent=2))
        verified = config_backup.verify_config_backup(taken["key"], running.state)
        assert verified["figures"]["config files differing"] == 1 and verified["differing"] == ["outputs.json"]
    finally:
        outputs.write_text(original)


def test_the_vault_copies_the_backups_bucket_and_refuses_a_damaged_object(running, tmp_path, monkeypatch):
    monkeypatch.setenv(vault.VAULT_ENV, str(tmp_path / "vault"))
    config_backup.config_backup(running.state)
    first = vault.replicate_backups(running.state)
    assert first["objects_copied"] >= 1 and first["objects"] == first["objects_copied"]
    assert vault.replicate_backups(running.state)["objects_copied"] == 0  # nothing new: nothing copied
    wiring = running_stack(running.state).wiring
    copy = vault.newest_copy(tmp_path / "vault", config_backup.CONFIG_PREFIX)
    assert copy.name == f"cluster-{vault._system_identifier(wiring)}"  # the cluster's own copy
    assert vault.restore_to_bucket(wiring, copy)["objects"] == first["objects"]
    path = next(iter(vault.vault_objects(copy).values()))
    path.write_bytes(b"damaged")
    with pytest.raises(RecoveryError, match="is not what was replicated"):
        vault.restore_to_bucket(wiring, copy)


def test_a_rebuild_never_lands_on_a_live_stack(running):
    with pytest.raises(RecoveryError, match="holds a stack already: a rebuild never lands on a live stack"):
        disaster.rebuild_from_backups(0.0, running.state)
    assert disaster.ensure_rebuilt(running.state) == {"rebuilt": False}
    refused = cli(running.env, "rebuild", check=False)  # the operator's command says so too
    assert refused.returncode == 1 and "a rebuild never lands on a live stack" in " ".join(refused.stderr.split())
