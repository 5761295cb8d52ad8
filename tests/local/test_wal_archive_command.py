"""The members' archive_command gives up at once when the archive cannot be reached (a zone cut off), so
a cut-off primary's shutdown is not held by its archiver."""

from __future__ import annotations

import socket
import subprocess

from local.layout import Layout
from local.wiring import Wiring


def _reach_part(command: str) -> str:
    reach, _, archive = command.partition(" && ")
    assert "barman-cloud-wal-archive" in archive and archive.endswith("%p")
    return reach


def test_the_archive_is_reached_before_barman_runs(tmp_path, monkeypatch):
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        monkeypatch.setenv("PYNOMALY_LOCAL_PORT_MOTO", str(listening.getsockname()[1]))
        reach = _reach_part(Wiring(Layout.create(tmp_path / "s", instances=3)).wal_archive_command)
        assert subprocess.run(["sh", "-c", reach], timeout=5).returncode == 0
    # the same port now closed: the try fails, and PostgreSQL keeps the segment for the next one
    assert subprocess.run(["sh", "-c", reach], timeout=5, capture_output=True).returncode != 0
