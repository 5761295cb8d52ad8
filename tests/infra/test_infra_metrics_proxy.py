"""The fleet's metrics proxy, run for real: the CloudWatch agent gets histograms as summaries.

The script is taken from the launch template's user data as rendered, served
real prometheus_client output by a local upstream, and scraped over HTTP.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from infra_helpers import inputs, rendered
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from servers import free_port, wait_until

from pynomaly_ops import metrics as names

pytestmark = pytest.mark.integration
DEADLINE_S = 15


def _proxy_script(tmp_path) -> tuple[str, int]:
    script = base64.b64decode(inputs(rendered("dev"), "dev-fleet-lt")["userData"]).decode()
    source = re.search(r"<<'PROXY'\n(.*?)PROXY\n", script, re.S).group(1)
    path = tmp_path / "metrics-proxy.py"
    path.write_text(source)
    unit = re.search(r"ExecStart=\S+ \S+ http://127.0.0.1:(\d+)/metrics (\d+)", script)
    return str(path), int(unit.group(2))


def _app_metrics() -> bytes:
    registry = CollectorRegistry()
    inference = Histogram(names.INFERENCE_DURATION, "inference", registry=registry)
    for seconds in (0.2, 0.4, 1.5):
        inference.observe(seconds)
    Counter(names.AUTH_FAILURES.removesuffix("_total"), "failures", registry=registry).inc(3)
    return generate_latest(registry)


class _App(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_proxy_serves_histograms_as_summaries_and_503_when_the_app_is_down(tmp_path):
    script, unit_port = _proxy_script(tmp_path)
    assert unit_port == 9464  # the port the agent's scrape config targets
    _App.body = _app_metrics()
    app = HTTPServer(("127.0.0.1", 0), _App)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    port = free_port()
    upstream = f"http://127.0.0.1:{app.server_address[1]}/metrics"
    proxy = subprocess.Popen([sys.executable, script, upstream, str(port)])
    try:
        status, text = wait_until(lambda: _get(f"http://127.0.0.1:{port}/metrics"), DEADLINE_S, "the metrics proxy")
        assert status == 200
        families = {f.name: f for f in text_string_to_metric_families(text)}
        inference = families[names.INFERENCE_DURATION]
        assert inference.type == "summary"
        samples = {s.name: s.value for s in inference.samples}
        assert samples == {f"{names.INFERENCE_DURATION}_sum": pytest.approx(2.1),
                           f"{names.INFERENCE_DURATION}_count": 3}  # fmt: skip
        assert "_bucket" not in text
        assert families[names.AUTH_FAILURES.removesuffix("_total")].type == "counter"
        app.shutdown()
        app.server_close()
        status, text = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 503 and upstream in text
    finally:
        proxy.terminate()
        proxy.wait(timeout=DEADLINE_S)
