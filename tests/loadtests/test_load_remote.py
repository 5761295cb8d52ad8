"""The remote driver's contract with the locustfile and its refusals (the real web-mode runs are in
test_load_runs.py): every /swarm field is an option the locustfile declares, and a master that is not this
suite's, or is busy, is refused with what to do."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from loadtests import remote, shapes, targets
from loadtests.runner import RunOptions
from pynomaly_ops.baselines import load


def _options(**kw) -> RunOptions:
    b = load()
    target = targets.Target("url", "default", "http://127.0.0.1:9", None)
    return RunOptions(shapes.build("peak", b, 5.0, 30), target, **kw)


# Run apart: importing Locust patches the interpreter with gevent, which the other tests must not inherit.
APPLY_AS_SWARM_DOES = """
import json, sys
from locust.argument_parser import get_parser
from loadtests import locustfile

form = json.load(sys.stdin)
options = vars(get_parser().parse_args([]))
unknown = [k for k in form if k != "host" and k not in options]
for key, value in form.items():  # Locust's /swarm: a field naming an option replaces it, as the default's type
    if key in options and key != "host":
        old = options[key]
        options[key] = value == "true" if isinstance(old, bool) else value if old is None else type(old)(value)
shape = locustfile._shape_from(type("Options", (), options))
lt = {k: v for k, v in options.items() if k.startswith("lt_")}
print(json.dumps({"unknown": unknown, "options": lt, "shape": [shape.name, shape.duration_s, shape.normal_rate_per_s]}))
"""


def test_every_swarm_field_is_a_locustfile_option_and_builds_the_run_asked_for():
    o = _options(fail_on="critical", max_users=7, seed=3, abort=False)
    form = remote.swarm_form(o, "run-1")
    done = subprocess.run(
        [sys.executable, "-c", APPLY_AS_SWARM_DOES], input=json.dumps(form), capture_output=True, text=True, check=True
    )
    got = json.loads(done.stdout.splitlines()[-1])
    assert got["unknown"] == [] and got["shape"] == ["peak", 30, 5.0]
    applied = got["options"]
    assert (applied["lt_fail_on"], applied["lt_max_users"], applied["lt_seed"]) == ("critical", 7, 3)
    assert applied["lt_no_abort"] is True and applied["lt_run_id"] == "run-1" and form["host"] == o.target.url


class _Master(BaseHTTPRequestHandler):
    answer: tuple[int, dict] = (404, {})

    def do_GET(self) -> None:
        status, body = self.answer
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def master() -> Iterator[tuple[str, type[_Master]]]:
    handler = type("Handler", (_Master,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_a_master_without_the_suite_route_is_refused(master, tmp_path):
    url, handler = master
    handler.answer = (404, {})
    with pytest.raises(remote.RemoteError, match="not this suite's locustfile"):
        remote.run(_options(reports=tmp_path), url, lambda _m: None)


def test_a_busy_master_is_refused_and_left_alone(master, tmp_path):
    url, handler = master
    handler.answer = (200, {"state": "running", "run_id": "someone-else", "workers": 2})
    with pytest.raises(remote.RemoteError, match="is running \\(run someone-else\\)"):
        remote.run(_options(reports=tmp_path), url, lambda _m: None)
    assert not any(tmp_path.iterdir())  # no run directory for a run that never started


def test_generators_without_an_api_key_are_refused_with_the_secret_to_create(master, tmp_path):
    url, handler = master
    handler.answer = (200, {"state": "ready", "run_id": "", "workers": 1, "api_key": False})
    with pytest.raises(remote.RemoteError, match="kubectl create secret generic pynomaly-load-api-key"):
        remote.run(_options(reports=tmp_path, mix="api"), url, lambda _m: None)
