"""moto for the local stack, back with its queues and buckets after a crash.

moto keeps everything in memory: a moto that supervisord restarts would come back
empty (no job queue, no DLQ redrive, no buckets) and the service would fail until
the next ``up``. This wrapper serves moto's own application on the stack's port,
then creates the resources the way ``up`` does (:func:`local.aws.ensure_resources`),
so the stack heals itself as SQS and S3, which never lose their queues, would.
What moto held when it died (messages, objects) is not restored.

Its health path (``/moto-api/``, probed by ``up`` and ``status``) answers 503 until
the resources are in place, so "healthy" means "usable", and ``up`` never creates
them at the same time as the wrapper.

It also publishes the queues' depths for Prometheus on the ``moto_metrics`` port, as
CloudWatch publishes AWS/SQS's on AWS: the local dead-letter alarm reads them.

Run by supervisord: ``python -m local.moto_server --state-dir <state dir>``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from werkzeug.serving import make_server

from local.aws import ensure_resources, queue_depths, sqs
from local.layout import Layout
from local.programs import MOTO_HEALTH_PATH
from local.wiring import Wiring
from pynomaly_ops.metrics import QUEUE_IN_FLIGHT, QUEUE_VISIBLE

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class ReadyGate:
    """WSGI middleware: the health path answers 503 until ``ready`` is set; the rest goes to moto."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app
        self.ready = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not self.ready.is_set() and environ.get("PATH_INFO", "").startswith(MOTO_HEALTH_PATH):
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"creating the stack's queues and buckets\n"]
        return self.app(environ, start_response)


class QueueDepths:
    """A Prometheus collector: each scrape reads both queues' counts from the SQS API, as CloudWatch does."""

    def __init__(self, wiring: Wiring) -> None:
        self.wiring = wiring
        self.client = sqs(wiring)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        labels = ["queue", "role"]
        visible = GaugeMetricFamily(QUEUE_VISIBLE, "Messages available to receive", labels=labels)
        in_flight = GaugeMetricFamily(QUEUE_IN_FLIGHT, "Messages received, not yet deleted", labels=labels)
        try:
            depths = queue_depths(self.wiring, self.client)
        except (BotoCoreError, ClientError):  # not created yet: no sample, rather than a false zero
            depths = {}
        for role, d in depths.items():
            visible.add_metric([d.name, role], d.visible)
            in_flight.add_metric([d.name, role], d.in_flight)
        return [visible, in_flight]


def _layout(state_dir: Path) -> Layout:
    layout = Layout.load(state_dir)
    if layout is None:
        sys.exit(f"moto_server: no local stack in {state_dir}: `pynomaly-ops local up` creates it")
    return layout


def serve(layout: Layout, stop: threading.Event) -> None:
    """Serve moto until ``stop`` is set; the stack's resources are created once it listens."""
    port = layout.ports["moto"]
    os.environ.setdefault("MOTO_PORT", str(port))  # as moto's own CLI does: some responses name the port
    app = ReadyGate(DomainDispatcherApplication(create_backend_app))
    server = make_server(layout.regional, port, app, threaded=True, request_handler=MotoRequestHandler)
    threading.Thread(target=server.serve_forever, name="moto", daemon=True).start()
    started = time.monotonic()
    try:
        ensure_resources(Wiring(layout))
    except (BotoCoreError, ClientError) as exc:  # exit: supervisord starts a fresh moto that tries again
        server.shutdown()
        sys.exit(f"moto_server: could not create the stack's queues and buckets: {exc}")
    app.ready.set()
    registry = CollectorRegistry()
    registry.register(QueueDepths(Wiring(layout)))
    start_http_server(layout.ports["moto_metrics"], addr=layout.regional, registry=registry)
    took = time.monotonic() - started
    print(f"moto on {layout.regional}:{port}: queues and buckets in place ({took:.1f}s)", flush=True)
    while not stop.wait(1.0):
        pass
    server.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m local.moto_server", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, required=True, help="the local stack's state directory")
    args = parser.parse_args(argv)
    layout = _layout(args.state_dir)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    serve(layout, stop)


if __name__ == "__main__":
    main()
