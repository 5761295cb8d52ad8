"""Bounded background load through the load balancer, counting failures."""

from __future__ import annotations

import threading

import httpx

RATE_PER_S = 40  # loopback only, bounded


class Traffic:
    def __init__(self, url: str):
        self.url = url
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.wait(1 / RATE_PER_S):
                try:
                    response = client.get(self.url)
                    if response.status_code == 200:
                        self.ok += 1
                    else:
                        self.failed.append(f"{response.status_code}")
                except httpx.HTTPError as exc:
                    self.failed.append(repr(exc))

    @property
    def error_rate_percent(self) -> float:
        total = self.ok + len(self.failed)
        return 100 * len(self.failed) / total if total else 0.0
