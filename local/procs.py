"""Finding this stack's processes from /proc: by the marker supervisord puts
in every child's environment, by the stack's paths on their command line,
and by the ports they listen on. ``down`` uses it to prove nothing is left,
``up`` to clear the orphans of a crashed run."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
from pathlib import Path

from local.layout import MARKER_ENV, Layout
from local.waiting import Timeout, wait_for

PROC = Path("/proc")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended or is not ours to read
        return b""


def cmdline(pid: int) -> str:
    return _read(PROC / str(pid) / "cmdline").replace(b"\0", b" ").decode(errors="replace").strip()


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        stat = _read(PROC / str(pid) / "stat").decode(errors="replace")
        try:
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (IndexError, ValueError):
            break
    return pids


def _pids() -> list[int]:
    return [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]


def stack_pids(layout: Layout) -> dict[int, str]:
    """pid -> command line of every live process that belongs to this stack."""
    marker = f"{MARKER_ENV}={layout.state_dir}\0".encode()
    paths = tuple(f"{d}/" for d in (layout.state_dir, layout.db_dir, layout.run_dir))
    mine = _ancestors()
    found = {}
    for pid in _pids():
        if pid in mine:
            continue
        line = cmdline(pid)
        if not line:
            continue  # kernel thread or gone
        environ = _read(PROC / str(pid) / "environ") + b"\0"
        if marker in environ or any(p in line for p in paths):
            found[pid] = line
    return found


def pids_under(path: Path) -> dict[int, str]:
    """pid -> command line of every live process whose command line names something under ``path``."""
    prefix = f"{path}/"
    return {pid: line for pid in _pids() if prefix in (line := cmdline(pid)) and _alive(pid)}


def _alive(pid: int) -> bool:
    stat = _read(PROC / str(pid) / "stat").decode(errors="replace")
    return bool(stat) and stat.rsplit(")", 1)[1].split()[0] != "Z"


def kill_all(pids: list[int], grace_s: float = 10) -> list[int]:
    """SIGTERM, then SIGKILL what is still alive at the deadline; returns survivors."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        try:
            wait_for("processes to exit", lambda: not any(_alive(p) for p in pids), grace_s)
            return []
        except Timeout:
            continue
    return [p for p in pids if _alive(p)]


def _listening_inodes() -> dict[int, tuple[str, int]]:
    """socket inode -> (address, port) for every IPv4 TCP listener."""
    inodes = {}
    for line in _read(PROC / "net" / "tcp").decode().splitlines()[1:]:
        fields = line.split()
        if fields[3] != "0A":  # LISTEN
            continue
        hex_addr, hex_port = fields[1].split(":")
        address = socket.inet_ntoa(struct.pack("<I", int(hex_addr, 16)))
        inodes[int(fields[9])] = (address, int(hex_port, 16))
    return inodes


def listeners() -> dict[tuple[str, int], int]:
    """(address, port) -> pid of the process listening there (IPv4 TCP)."""
    inodes = _listening_inodes()
    found = {}
    for pid in _pids():
        fd_dir = PROC / str(pid) / "fd"
        try:
            fds = list(fd_dir.iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[8:-1])
                if inode in inodes:
                    found[inodes[inode]] = pid
    return found


def holder(address: str, port: int) -> str:
    """Who listens on ``address:port`` (a wildcard bind counts), for error messages."""
    for (addr, p), pid in listeners().items():
        if p == port and addr in (address, "0.0.0.0"):
            return f"pid {pid} ({cmdline(pid)[:80]})"
    return "another process"
