"""The request stream (seeded, different from request to request, a share repeating) and the command line's
usage errors (exit 2, listing the valid values)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from loadtests import targets
from loadtests.workload import BAD, DETECT, MIXES, Generator
from pynomaly_cli.cli import app
from pynomaly_ops.naming import LOAD_ALLOW_REMOTE_ENV


def _bodies(seed, n=150, repeat=0.0):
    g = Generator(seed, repeat_share=repeat)
    return [(k.name, g.body(k)) for k in (g.pick() for _ in range(n))]


def test_the_stream_is_reproducible_from_its_seed_and_differs_between_seeds():
    assert _bodies(7) == _bodies(7)
    assert _bodies(7) != _bodies(8)


def test_detection_bodies_differ_from_request_to_request_unless_a_repeat_is_drawn():
    detect = [b for name, b in _bodies(1, 300) if name == DETECT]
    assert len(detect) > 150 and len(set(detect)) == len(detect)
    sizes = {len(json.loads(b)["series"]) for b in detect}
    assert sizes == {100, 500, 1000, 2000}
    repeated = [b for name, b in _bodies(1, 400, repeat=0.3) if name == DETECT]
    share = 1 - len(set(repeated)) / len(repeated)
    assert 0.2 < share < 0.4


def test_the_mix_is_mostly_detections_with_a_small_share_of_bad_requests():
    kinds = MIXES["api"]
    total = sum(k.weight for k in kinds)
    assert next(k.weight for k in kinds if k.name == DETECT) / total == pytest.approx(0.7)
    assert sum(k.weight for k in BAD) / total == pytest.approx(0.05)
    assert all(k.expected_status and 400 <= k.expected_status < 500 for k in BAD)


def test_a_poll_without_a_job_submits_one_first():
    g = Generator(3)
    assert not g.jobs
    picked = {g.pick().name for _ in range(300)}
    assert "GET /api/v1/jobs/{id}" not in picked
    g.job_submitted("5f0c3b8e-0000-4000-8000-000000000000")
    assert "/api/v1/jobs/5f0c3b8e" in g.path(next(k for k in g.kinds if k.name == "GET /api/v1/jobs/{id}"))


runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--shape", "burst"], "the shapes: normal, peak, weekend, holiday, daily, spike, step, soak"),
        (["--target", "mars"], "the targets: local"),
        (["--duration", "soon"], "does not parse"),
        (["--fail-on", "panic"], "the levels: normal, warning, critical"),
        (["--workers", "0"], "--workers must be 1 to"),
        (["--shape", "normal", "--watch-scaling"], "--watch-scaling goes with --shape step or spike"),
        (["--url", "http://192.0.2.1:80"], "not a loopback address"),
        (["--stack", "prod"], "--outputs"),
        (["--remote"], "--remote drives a stack's load generators: give --stack NAME"),
        (["--remote", "--stack", "prod", "--master-url", "http://127.0.0.1:1"], "not both"),
    ],
)
def test_usage_errors_exit_2_with_the_valid_values(args, expected, monkeypatch):
    monkeypatch.delenv(LOAD_ALLOW_REMOTE_ENV, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")  # no Pulumi CLI here: --stack needs --outputs
    result = runner.invoke(app, ["load", "run", *args])
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split())


def _outputs(**extra: str) -> dict[str, str]:
    return {
        "load_balancer_url": "http://127.0.0.1:18080/",
        **{
            k: "x"
            for k in (
                "db_writer_endpoint",
                "db_reader_endpoint",
                "redis_primary_endpoint",
                "redis_reader_endpoint",
                "queue_url",
                "dead_letter_queue_url",
                "artifacts_bucket",
                "backups_bucket",
            )
        },
        **extra,
    }


def test_a_stack_is_read_from_its_saved_outputs(tmp_path):
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(_outputs()))
    t = targets.stack("staging", path, api_key="k")
    assert (t.kind, t.name, t.url, t.api_key) == ("stack", "staging", "http://127.0.0.1:18080", "k")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(targets.TargetError, match="not a stack's outputs"):
        targets.stack("staging", tmp_path / "bad.json")


def test_compare_refuses_what_is_not_a_run():
    result = runner.invoke(app, ["load", "compare", "/nonexistent/a", "/nonexistent/b"])
    assert result.exit_code == 2 and "not a load run's verdict" in result.output


def test_remote_refuses_a_stack_without_load_generators_and_names_the_setting(tmp_path):
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(_outputs()))
    result = runner.invoke(app, ["load", "run", "--stack", "staging", "--outputs", str(path), "--remote"])
    assert result.exit_code == 1, result.output
    assert "pulumi config set loadgen.enabled true --stack staging" in " ".join(result.output.split())


def test_remote_without_kubectl_says_how_to_reach_the_master(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(_outputs(load_generators_namespace="pynomaly-load-staging", cluster_name="eks-1")))
    result = runner.invoke(app, ["load", "run", "--stack", "staging", "--outputs", str(path), "--remote"])
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "aws eks update-kubeconfig --name eks-1" in text and "--master-url" in text
