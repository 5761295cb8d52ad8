"""``pynomaly-ops load run --remote``: drive a Locust master that stays up (web mode) instead of Locust on
this machine: the load generators a stack declares on its EKS cluster (``infra/load_generators.py``), reached
through ``kubectl port-forward``, or any master at ``--master-url``.

The run is started with ``POST /swarm`` (the shape and every ``--lt-*`` option in the form; the master hands
them to its workers), followed through ``GET /pynomaly/run`` (progress, then the verdict and the recording,
which the master judges as the run stops) and reported here like a local run: the same verdict, JUnit, plot
and Markdown, with Locust's CSV and HTML fetched from the master. The API key is not sent: the generators
read it from their own Secret, so it never crosses this connection or the Locust UI.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from loadtests import scaling
from loadtests.runner import START_TIMEOUT_S, STOP_GRACE_S, RunOptions, Say, finish, run_dir_for
from loadtests.targets import Target, checked_url
from pynomaly_ops.naming import (
    LOAD_API_KEY_ITEM,
    LOAD_API_KEY_SECRET,
    LOCUST_MASTER_SERVICE,
    LOCUST_RUN_ROUTE,
    LOCUST_WEB_PORT,
)
from pynomaly_ops.outputs import LOAD_GENERATORS_NAMESPACE

POLL_S = 2.0
BUSY_STATES = ("spawning", "running", "stopping")
LOCUST_FILES = {  # master route -> file in the run directory
    "/stats/requests/csv": "locust_stats.csv",
    "/stats/failures/csv": "locust_failures.csv",
    "/stats/report?download=1&theme=light": "locust.html",
}


class RemoteError(RuntimeError):
    """The master cannot be reached, is busy, or is not running this suite's locustfile."""


class Unreachable(RemoteError):
    """Nothing answers at the master's URL (yet: a pod starting, a port-forward just opened)."""


def swarm_form(o: RunOptions, run_id: str) -> dict[str, str]:
    """The /swarm form: the target and the locustfile's options (their names without the dashes)."""
    form = {
        "host": o.target.url,
        "lt_shape": o.shape.name,
        "lt_duration": f"{o.shape.duration_s:g}s",
        "lt_rate": f"{o.shape.normal_rate_per_s:g}",
        "lt_target": o.target.name,
        "lt_mix": o.mix,
        "lt_fail_on": o.fail_on or "",
        "lt_min_throughput": f"{o.min_throughput_per_s or 0:g}",
        "lt_no_abort": "false" if o.abort else "true",
        "lt_run_id": run_id,
    }
    if o.max_users:
        form["lt_max_users"] = str(o.max_users)
    if o.seed is not None:
        form["lt_seed"] = str(o.seed)
    return form


def _state(client: httpx.Client) -> dict[str, Any]:
    try:
        answer = client.get(LOCUST_RUN_ROUTE)
    except httpx.HTTPError as exc:
        raise Unreachable(f"no Locust master at {client.base_url}: {exc}") from None
    if answer.status_code == 404:
        raise RemoteError(
            f"{client.base_url} is a Locust master without {LOCUST_RUN_ROUTE}: not this suite's locustfile"
        )
    answer.raise_for_status()
    return dict(answer.json())


def _wait_ready(client: httpx.Client, workers: int, say: Say) -> dict[str, Any]:
    """The master idle with at least ``workers`` workers connected (they may still be starting)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            state = _state(client)
        except Unreachable:
            if time.monotonic() > deadline:
                raise
            time.sleep(POLL_S)
            continue
        if state["state"] in BUSY_STATES:
            raise RemoteError(
                f"the master at {client.base_url} is {state['state']} (run {state['run_id'] or 'from its UI'}): "
                "wait for it, or stop it in its web UI"
            )
        if state["workers"] >= workers:
            return state
        if time.monotonic() > deadline:
            raise RemoteError(f"{state['workers']} of {workers} Locust workers connected after {START_TIMEOUT_S}s")
        say(f"waiting for Locust workers: {state['workers']} of {workers} connected")
        time.sleep(POLL_S)


def _start(client: httpx.Client, form: dict[str, str]) -> None:
    answer = client.post("/swarm", data=form)
    answer.raise_for_status()
    body = answer.json()
    if not body.get("success"):
        raise RemoteError(f"the master refused the run: {body.get('message')}")


def _follow(client: httpx.Client, run_id: str, duration_s: float, say: Say) -> dict[str, Any] | None:
    """Relay progress until the master has judged run ``run_id``; stop it if it overruns. None: no verdict."""
    deadline = time.monotonic() + START_TIMEOUT_S + duration_s + STOP_GRACE_S
    shown = ""
    while time.monotonic() < deadline:
        time.sleep(POLL_S)
        state = _state(client)
        if state["run_id"] != run_id:
            raise RemoteError(f"another run ({state['run_id'] or 'from the UI'}) replaced {run_id} on the master")
        if state["progress"] and state["progress"] != shown:
            shown = state["progress"]
            say(shown)
        if state["verdict"] is not None:
            return state
    say("the remote run did not stop in time: stopping it")
    client.get("/stop")
    return None


def _fetch_locust_files(client: httpx.Client, run_dir: Path) -> None:
    for route, name in LOCUST_FILES.items():
        answer = client.get(route)
        if answer.status_code == 200:
            (run_dir / name).write_bytes(answer.content)


def run(o: RunOptions, master_url: str, say: Say) -> tuple[dict[str, Any], Path]:
    """Run the load test on the master at ``master_url``; returns the verdict and the run's directory."""
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + f"-{o.shape.name}"
    with httpx.Client(base_url=checked_url(master_url), timeout=30) as client:
        state = _wait_ready(client, o.workers, say)
        if o.mix == "api" and not state.get("api_key"):
            raise RemoteError(
                "the load generators have no API key: create their Secret (loadtests/README.md, "
                f"`kubectl create secret generic {LOAD_API_KEY_SECRET} --from-literal={LOAD_API_KEY_ITEM}=...`)"
            )
        run_dir = run_dir_for(o, say, f"{state['workers']} remote worker(s) at {master_url}")
        watcher = scaling.Watcher(o.target) if o.watch_scaling else None
        _start(client, swarm_form(o, run_id))
        if watcher:
            watcher.start()
        try:
            done = _follow(client, run_id, o.shape.duration_s, say)
        except BaseException:
            client.get("/stop")  # interrupted or lost: the run must not go on without its driver
            raise
        finally:
            if watcher:
                watcher.stop()
        if done is not None:
            (run_dir / "recording.json").write_text(json.dumps(done["recording"]))
            (run_dir / "verdict.json").write_text(json.dumps(done["verdict"], indent=2, default=str) + "\n")
        _fetch_locust_files(client, run_dir)
    return finish(o, run_dir, None if done is None else 0, watcher), run_dir


def _namespace(target: Target) -> str:
    ns = getattr(target.outputs, LOAD_GENERATORS_NAMESPACE, None) if target.outputs else None
    if not ns:
        raise RemoteError(
            f"stack {target.name} declares no load generators: `pulumi config set loadgen.enabled true "
            f"--stack {target.name} && pulumi up --stack {target.name}` (needs cluster.enabled)"
        )
    return str(ns)


@contextmanager
def port_forward(target: Target, kubectl: str | None = None) -> Iterator[str]:
    """``kubectl port-forward`` to the stack's Locust master (the current kubeconfig context, as ``aws eks
    update-kubeconfig`` sets it); yields the local URL, stops the forward on the way out."""
    namespace = _namespace(target)
    kubectl = kubectl or shutil.which("kubectl")
    if kubectl is None:
        raise RemoteError(
            "no kubectl to reach the load generators: install it and run `aws eks update-kubeconfig --name "
            f"{target.outputs.cluster_name if target.outputs else '<cluster>'}`, or forward the master's port "
            "yourself and pass --master-url http://127.0.0.1:PORT"
        )
    argv = [kubectl, "port-forward", "-n", namespace, f"svc/{LOCUST_MASTER_SERVICE}", f":{LOCUST_WEB_PORT}"]
    forward = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert forward.stdout is not None
        line = forward.stdout.readline()  # "Forwarding from 127.0.0.1:PORT -> 8089"
        found = re.search(r"127\.0\.0\.1:(\d+)", line)
        if not found:
            raise RemoteError(f"kubectl port-forward -n {namespace} svc/{LOCUST_MASTER_SERVICE}: {line.strip()}")
        # kubectl prints a line per connection: drain them, or a long run fills the pipe and stalls it.
        threading.Thread(target=forward.stdout.read, daemon=True).start()
        yield f"http://127.0.0.1:{found.group(1)}"
    finally:
        forward.terminate()
        try:
            forward.wait(10)
        except subprocess.TimeoutExpired:
            forward.kill()
