"""The console script: a bad numbers file is one clear error, not a traceback; tables survive a pipe."""

from __future__ import annotations

import os
import subprocess
import sys

from pynomaly_ops.baselines import DEFAULT_PATH, PATH_ENV


def test_a_bad_numbers_file_is_reported_by_file_and_key(tmp_path):
    bad = tmp_path / "baselines.yaml"
    bad.write_text(
        DEFAULT_PATH.read_text().replace(
            "cpu_percent:           {warning: 80,  critical: 95}", "cpu_percent:           {warning: 95,  critical: 80}"
        )
    )
    assert bad.read_text() != DEFAULT_PATH.read_text(), "the fixture edit no longer matches baselines.yaml"
    proc = subprocess.run(
        # A command that reads the numbers (nothing reads them at import time: `local down` works regardless).
        [sys.executable, "-m", "pynomaly_cli.entry", "drill", "list"],
        env={**os.environ, PATH_ENV: str(bad)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert f"{bad}: invalid runbook numbers" in proc.stderr
    assert "thresholds.cpu_percent" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_tables_piped_to_a_log_are_not_cut_at_80_columns():
    """A plan in a CI log keeps every alarm name and numbers-file key whole (rich's default would cut them)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pynomaly_cli.entry", "plan", "--stack", "dev"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "thresholds.response_time_p95_ms.warning" in proc.stdout
    assert "…" not in proc.stdout


def test_an_install_without_the_command_lines_extras_says_which_to_add():
    """The app image and the AMI install the service only; `pynomaly-ops` there names the missing extras."""
    code = (
        "import sys; sys.modules['httpx'] = None; sys.argv = ['pynomaly-ops', 'local', 'status']\n"
        "from pynomaly_cli.entry import main; main()"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "'httpx'" in proc.stderr and "pip install -e '.[local,platform]'" in proc.stderr
    assert "Traceback" not in proc.stderr
