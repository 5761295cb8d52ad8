"""HAProxy's runtime API (the stats socket): backend state, and adding or
removing an instance without a reload, so scaling drops no request."""

from __future__ import annotations

import csv
import io
import socket
from pathlib import Path

from local.programs import FLEET_GROUP, Program


class HAProxyError(RuntimeError):
    pass


class HAProxy:
    def __init__(self, socket_path: Path):
        self.socket_path = socket_path

    def command(self, line: str, timeout_s: float = 2.0) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout_s)
            s.connect(str(self.socket_path))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def ok(self) -> bool:
        try:
            return "Name: HAProxy" in self.command("show info")
        except OSError:
            return False

    def set_flag(self, flags: Path, name: str, value: str) -> None:
        """Change a run-time switch of the map ``flags`` (e.g. ``maintenance on``); the file keeps the default."""
        reply = self.command(f"set map {flags} {name} {value}").strip()
        if reply:
            raise HAProxyError(f"haproxy `set map {flags} {name} {value}`: {reply}")

    def flag(self, flags: Path, name: str) -> str | None:
        """The current value of a switch (``show map``: one ``<id> <key> <value>`` line per entry)."""
        for line in self.command(f"show map {flags}").splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] == name:
                return parts[2]
        return None

    def stats(self) -> list[dict[str, str]]:
        """``show stat`` rows (one per frontend/backend/server)."""
        text = self.command("show stat").lstrip("# ")
        return list(csv.DictReader(io.StringIO(text)))

    def servers(self, backend: str = FLEET_GROUP) -> dict[str, dict[str, str]]:
        return {
            r["svname"]: r
            for r in self.stats()
            if r["pxname"] == backend and r["svname"] not in ("FRONTEND", "BACKEND")
        }

    def server_status(self, backend: str = FLEET_GROUP) -> dict[str, str]:
        """server -> "UP" / "DOWN" / "MAINT" / "DRAIN" ..."""
        return {name: row["status"] for name, row in self.servers(backend).items()}

    def _checked(self, line: str) -> None:
        reply = self.command(line).strip()
        if reply and not reply.startswith(("New server registered", "Server deleted")):
            raise HAProxyError(f"haproxy `{line}`: {reply}")

    def add_server(self, program: Program) -> None:
        """Register an instance; it takes traffic once its checks pass (rise 2)."""
        if program.name in self.servers():
            return
        target = f"{FLEET_GROUP}/{program.name}"
        self._checked(f"add server {target} {program.address}:{program.port} check inter 1s fall 2 rise 2")
        self._checked(f"enable health {target}")
        self._checked(f"enable server {target}")

    def drain(self, name: str) -> None:
        self._checked(f"set server {FLEET_GROUP}/{name} state drain")

    def active_sessions(self, name: str) -> int:
        row = self.servers().get(name)
        return int(row["scur"] or 0) if row else 0

    def delete_server(self, name: str) -> None:
        if name not in self.servers():
            return
        self._checked(f"set server {FLEET_GROUP}/{name} state maint")
        self._checked(f"del server {FLEET_GROUP}/{name}")
