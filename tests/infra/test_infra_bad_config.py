"""Bad configuration fails before any resource, with one message naming the file and key."""

from __future__ import annotations

import pytest
from infra_helpers import write_baselines

from pynomaly_ops import baselines
from pynomaly_ops.offline import OfflineError, render


def _error(stack: str, overrides: dict) -> str:
    with pytest.raises(OfflineError) as caught:
        render(stack, overrides)
    return str(caught.value)


@pytest.mark.parametrize(
    ("stack", "overrides", "key", "says"),
    [
        ("dev", {"pynomaly:db.multiaz": False}, "pynomaly:db.multiaz", "unknown setting"),
        ("staging", {"pynomaly:db.allocated_storage_gb": 600}, "pynomaly:db.allocated_storage_gb", "min > max"),
        ("prod", {"pynomaly:db.multi_az": False}, "pynomaly:db.multi_az", "must stay true"),
        ("prod", {"pynomaly:db.deletion_protection": False}, "pynomaly:db.deletion_protection", "must stay true"),
        ("prod", {"pynomaly:lb.deletion_protection": False}, "pynomaly:lb.deletion_protection", "must stay true"),
        ("dev", {"pynomaly:lb.certificate_arn": ""}, "pynomaly:lb.certificate_arn", "pulumi config set"),
    ],
    ids=["unknown-key", "min-over-max", "prod-single-az", "prod-db-unprotected", "prod-lb-unprotected", "no-cert"],
)
def test_bad_setting_names_the_stack_file_and_key(stack, overrides, key, says):
    message = _error(stack, overrides)
    assert f"stacks/Pulumi.{stack}.yaml" in message
    assert key in message and says in message
    assert "Traceback" not in message


def test_same_switch_is_allowed_outside_prod():
    # The prod rule is about the stack, not the setting: dev may be single-AZ.
    rendering = render("dev", {"pynomaly:db.multi_az": False})
    primary = rendering.named("dev-database-primary").plain_inputs
    assert primary["multiAz"] is False


def test_warning_at_or_above_critical_in_the_numbers_file_names_file_and_key(tmp_path, monkeypatch):
    def same(data):
        data["thresholds"]["cpu_percent"]["warning"] = data["thresholds"]["cpu_percent"]["critical"]

    path = write_baselines(tmp_path, same)
    monkeypatch.setenv(baselines.PATH_ENV, str(path))
    message = _error("dev", {})
    assert str(path) in message
    assert "thresholds.cpu_percent" in message and "must be below critical" in message
