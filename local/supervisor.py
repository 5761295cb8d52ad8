"""supervisord: the process supervisor that replaces a dead server (the
ASG's role), driven over its XML-RPC unix socket."""

from __future__ import annotations

import subprocess
import sys
import xmlrpc.client
from pathlib import Path

from supervisor.xmlrpc import SupervisorTransport

from local.layout import Layout
from local.waiting import wait_for


class SupervisorError(RuntimeError):
    pass


class Supervisor:
    def __init__(self, layout: Layout):
        self.layout = layout
        self.socket = layout.supervisor_socket
        self.config = layout.conf_dir / "supervisord.conf"

    @property
    def rpc(self):
        transport = SupervisorTransport(None, None, f"unix://{self.socket}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def running(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return self.rpc.getState()["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Fault):
            return False

    def pid(self) -> int | None:
        pidfile = self.layout.run_dir / "supervisord.pid"
        try:
            return int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def start(self, timeout_s: float = 10) -> None:
        """Start the daemon; it forks into the background and outlives the CLI."""
        cmd = [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.config)]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SupervisorError(f"supervisord did not start: {result.stderr.strip() or result.stdout.strip()}")
        wait_for("supervisord", self.running, timeout_s)

    def info(self) -> dict[str, dict]:
        return {p["name"]: p for p in self.rpc.getAllProcessInfo()}

    def active(self) -> set[str]:
        """Programs running or on their way up."""
        return {name for name, p in self.info().items() if p["statename"] in ("RUNNING", "STARTING")}

    def start_programs(self, names: list[str]) -> None:
        active = self.active()
        for name in names:
            if name not in active:
                self._call(self.rpc.startProcess, name, False)

    def stop_program(self, name: str) -> None:
        """Stop ``name`` (its stop signal, then SIGKILL after its stopwaitsecs) and wait until it has exited."""
        self._call(self.rpc.stopProcess, name, True)

    def stop_programs(self, names: list[str], timeout_s: float = 60) -> None:
        """Stop ``names`` all at once (each its stop signal, then SIGKILL after its stopwaitsecs) and wait
        until every one has exited."""
        for name in names:
            self._call(self.rpc.stopProcess, name, False)
        stopping = ("RUNNING", "STARTING", "STOPPING", "BACKOFF")
        wait_for(f"{', '.join(names)} to stop", lambda: not any(
            self.info().get(n, {}).get("statename") in stopping for n in names), timeout_s)  # fmt: skip

    def add(self, name: str) -> None:
        """Load a newly written program file and start it."""
        self.rpc.reloadConfig()
        if name not in self.info():
            self._call(self.rpc.addProcessGroup, name)
        self.start_programs([name])

    def apply_config(self) -> list[str]:
        """Load rewritten program files: add new programs, restart changed ones,
        drop removed ones. Unchanged programs are not touched. Returns the changes."""
        [[added, changed, removed]] = self.rpc.reloadConfig()
        for name in changed + removed:
            self.remove(name)
        for name in added + changed:
            self._call(self.rpc.addProcessGroup, name)
        return [f"+{n}" for n in added] + [f"~{n}" for n in changed] + [f"-{n}" for n in removed]

    def remove(self, name: str) -> None:
        if name in self.info():
            self._call(self.rpc.stopProcessGroup, name, True)
            self._call(self.rpc.removeProcessGroup, name)

    def signal(self, name: str, signal: str) -> None:
        self.rpc.signalProcess(name, signal)

    def shutdown(self) -> None:
        self.rpc.shutdown()

    @staticmethod
    def _call(method, *args) -> None:
        try:
            method(*args)
        except xmlrpc.client.Fault as fault:
            # Already in the wanted state is fine; anything else is an error.
            if fault.faultString.split(":")[0] not in ("ALREADY_STARTED", "NOT_RUNNING", "ALREADY_ADDED", "BAD_NAME"):
                raise SupervisorError(f"supervisord: {fault.faultString}") from None


def log_tail(layout: Layout, name: str, lines: int = 15) -> str:
    path: Path = layout.log_dir / f"{name}.log"
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
