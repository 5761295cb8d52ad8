"""Shared by every suite: tests/ on sys.path, so each imports the real-server
helpers as ``servers`` (tests/servers.py) however pytest was started."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest


@pytest.fixture(autouse=True, scope="session")
def _backup_key_of_the_tests(tmp_path_factory):
    """The configuration backups' key in a directory of the run's, not in the user's ~/.config."""
    from local.config_backup import KEY_ENV

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEY_ENV, str(tmp_path_factory.mktemp("backup-key") / "backup.key"))
        yield
