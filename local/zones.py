"""Availability zones as network namespaces: `local up --zones` (root only).

Each zone (a, b, c) is a network namespace ``pynomaly-<net_id>-<zone>`` joined to one bridge in the root
namespace by a veth pair. The bridge holds the regional address (``10.213.<net_id>.1``: the load balancer,
the AWS stand-in, monitoring and the drills, as clients outside the zones); each zone's end of its pair holds
the zone's address. The namespaces have no default route, so nothing in them reaches past the bridge.

Breaking a zone is then real, not simulated:

- ``cut(zone)`` takes the zone's veth down in the root namespace. Packets are dropped silently both ways:
  open connections hang half-open, new ones time out, and the zone's servers keep running and talking among
  themselves, as an AZ cut off from the others.
- ``power_off(zone)`` also SIGKILLs every process in the zone's namespace, and keeps the supervisor's
  restarts waiting (:func:`confine` wraps each zonal command) until ``power_on``: an AZ power interruption.

Every zonal program runs inside its namespace through ``nsenter``, as its own user; nothing else of the
stack changes.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

from local.layout import ZONE_NAMES, ZONED_PREFIX, Layout
from local.programs import Program

NAMESPACE_DIR = Path("/run/netns")
SYS_NET = Path("/sys/class/net")
ZONE_LINK = "zone0"  # the zone's end of its veth pair, inside its namespace
OFF_POLL_S = 0.5
POWER_OFF_TIMEOUT_S = 10.0


class ZoneError(RuntimeError):
    """The zones cannot be made, broken or mended; the message says why and what to do."""


def require_root(what: str = "`local up --zones`") -> None:
    if os.geteuid() != 0:
        raise ZoneError(f"{what} needs root: network namespaces and veth pairs are made as root (sudo)")
    if shutil.which("ip") is None or shutil.which("nsenter") is None:
        raise ZoneError("the zones need `ip` (iproute2) and `nsenter` (util-linux): apt-get install iproute2")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise ZoneError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done


def project_subnets() -> list[str]:
    """The /24s of the zoned stacks that exist on this machine (each bridge is ``pyn<net_id>br``)."""
    names = [p.name for p in SYS_NET.glob("pyn*br")] if SYS_NET.exists() else []
    ids = [n[3:-2] for n in names if n[3:-2].isdigit()]
    return [f"{ZONED_PREFIX}.{i}" for i in ids]


def is_project_address(host: str) -> bool:
    """An address in the subnet of a zoned stack this machine has made: the project's own namespaces."""
    return any(host.startswith(subnet + ".") for subnet in project_subnets())


@dataclass(frozen=True)
class Zones:
    """The network of one zoned stack."""

    layout: Layout

    # --- names -------------------------------------------------------------
    @property
    def net_id(self) -> int:
        if not self.layout.zoned or self.layout.net_id is None:
            raise ZoneError("this local stack has no zones: `pynomaly-ops local down --purge`, then `local up --zones`")
        return self.layout.net_id

    @property
    def bridge(self) -> str:
        return f"pyn{self.net_id}br"

    def namespace(self, zone: str) -> str:
        self._known(zone)
        return f"pynomaly-{self.net_id}-{zone}"

    def namespace_path(self, zone: str) -> Path:
        return NAMESPACE_DIR / self.namespace(zone)

    def host_link(self, zone: str) -> str:
        """The root namespace's end of the zone's veth pair, on the bridge: the zone's cable."""
        self._known(zone)
        return f"pyn{self.net_id}{zone}"

    def off_flag(self, zone: str) -> Path:
        self._known(zone)
        return self.layout.run_dir / f"zone-{zone}.off"

    @staticmethod
    def _known(zone: str) -> None:
        if zone not in ZONE_NAMES:
            raise ZoneError(f"no zone {zone!r}: the zones are {', '.join(ZONE_NAMES)}")

    # --- the network -------------------------------------------------------
    def exists(self) -> bool:
        return (SYS_NET / self.bridge).exists() and all(self.namespace_path(z).exists() for z in ZONE_NAMES)

    def create(self) -> list[str]:
        """Make what is missing (idempotent); every zone ends connected and powered. Returns what was made."""
        require_root()
        made = []
        if not (SYS_NET / self.bridge).exists():
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.layout.regional}/24", "dev", self.bridge)
            made.append(self.bridge)
        _ip("link", "set", self.bridge, "up")
        for zone in ZONE_NAMES:
            if not self.namespace_path(zone).exists():
                self._create_zone(zone)
                made.append(self.namespace(zone))
            self.off_flag(zone).unlink(missing_ok=True)
            _ip("link", "set", self.host_link(zone), "up")
        return made

    def _create_zone(self, zone: str) -> None:
        ns, host = self.namespace(zone), self.host_link(zone)
        _ip("link", "del", host, check=False)  # a pair left by a namespace removed by hand
        _ip("netns", "add", ns)
        _ip("link", "add", host, "type", "veth", "peer", "name", ZONE_LINK, "netns", ns)
        _ip("link", "set", host, "master", self.bridge, "up")
        _ip("-n", ns, "addr", "add", f"{self.layout.zone_address(zone)}/24", "dev", ZONE_LINK)
        _ip("-n", ns, "link", "set", ZONE_LINK, "up")
        _ip("-n", ns, "link", "set", "lo", "up")

    def remove(self) -> list[str]:
        """Remove the namespaces, their veth pairs and the bridge (idempotent). Returns what was removed."""
        if not self.layout.zoned:
            return []
        require_root("removing the zones")
        removed = []
        for zone in ZONE_NAMES:
            if self.pids(zone):
                raise ZoneError(f"processes still run in zone {zone} ({self.pids(zone)}): stop the stack first")
            # the pair deleted from the root namespace's end first: that is synchronous, where a namespace's
            # own teardown (`netns del`) frees its links later, and a lingering host end read as a cut zone
            _ip("link", "del", self.host_link(zone), check=False)
            if self.namespace_path(zone).exists():
                _ip("netns", "del", self.namespace(zone))
                removed.append(self.namespace(zone))
            self.off_flag(zone).unlink(missing_ok=True)
        if (SYS_NET / self.bridge).exists():
            _ip("link", "del", self.bridge)
            removed.append(self.bridge)
        return removed

    def link_state(self, zone: str) -> str:
        """``up``, ``cut`` (its cable down), ``powered off`` or ``absent`` (no namespace, whatever link is left)."""
        path = SYS_NET / self.host_link(zone) / "operstate"
        if not path.exists() or not self.namespace_path(zone).exists():
            return "absent"
        if self.off_flag(zone).exists():
            return "powered off"
        return "up" if path.read_text().strip() in ("up", "unknown") else "cut"

    # --- faults ------------------------------------------------------------
    def cut(self, zone: str) -> None:
        """The zone's cable pulled: silent loss both ways; everything inside keeps running."""
        self._require(zone)
        _ip("link", "set", self.host_link(zone), "down")

    def heal(self, zone: str) -> None:
        self._require(zone)
        _ip("link", "set", self.host_link(zone), "up")

    def power_off(self, zone: str) -> list[int]:
        """Cut the zone and SIGKILL everything in it until nothing is left; restarts wait for ``power_on``.
        Returns the pids killed."""
        self._require(zone)
        self.off_flag(zone).parent.mkdir(parents=True, exist_ok=True)
        self.off_flag(zone).write_text(f"powered off at {time.time()}\n")
        self.cut(zone)
        killed: set[int] = set()
        deadline = time.monotonic() + POWER_OFF_TIMEOUT_S
        while pids := self.pids(zone):
            if time.monotonic() > deadline:
                raise ZoneError(f"processes in zone {zone} survive SIGKILL: {pids}")
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)  # a restart already past its wait may enter once more: sweep again
        return sorted(killed)

    def power_on(self, zone: str) -> None:
        """Power back and cable in: the supervisor's waiting restarts enter the zone again."""
        self._require(zone)
        self.off_flag(zone).unlink(missing_ok=True)
        self.heal(zone)

    def _require(self, zone: str) -> None:
        require_root("breaking a zone")
        if not self.namespace_path(zone).exists():
            raise ZoneError(f"zone {zone} has no namespace {self.namespace(zone)}: is the stack up with --zones?")

    def pids(self, zone: str) -> list[int]:
        """Every process whose network namespace is the zone's."""
        try:
            target = os.stat(self.namespace_path(zone)).st_ino
        except FileNotFoundError:
            return []
        wanted = f"net:[{target}]"
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.readlink(entry / "ns" / "net") == wanted:
                        pids.append(int(entry.name))
                except OSError:
                    continue  # gone, or a kernel thread
        return sorted(pids)

    # --- running inside a zone ----------------------------------------------
    def enter(self, zone: str, command: list[str], user: str | None = None) -> list[str]:
        """``command`` run inside the zone's namespace (as ``user``, if given)."""
        as_user: list[str] = []
        if user is not None:
            uid, gid = _ids(user)
            as_user = ["-S", str(uid), "-G", str(gid)]
        return ["nsenter", f"--net={self.namespace_path(zone)}", *as_user, "--", *command]


def _ids(user: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ZoneError(f"no user {user!r} on this machine") from None
    return entry.pw_uid, entry.pw_gid


def confine(layout: Layout, program: Program) -> Program:
    """``program`` as the supervisor runs it on a zoned stack: inside its zone's namespace, as its user, and
    only while the zone has power (a restart waits while the zone is off). Unchanged when unzoned or regional."""
    if not layout.zoned or not program.zone:
        return program
    zones = Zones(layout)
    flag = shlex.quote(str(zones.off_flag(program.zone)))
    inner = shlex.join(zones.enter(program.zone, program.command, program.user))
    script = f"while [ -e {flag} ]; do sleep {OFF_POLL_S}; done; exec {inner}"
    env = dict(program.env)
    if program.user:
        env |= {"USER": program.user, "LOGNAME": program.user}
    return replace(program, command=["/bin/sh", "-c", script], user=None, env=env, wrapped=program.executable)
