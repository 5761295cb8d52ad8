"""deploy/rds_ca.py: the RDS CA bundle the AMI bake and the image build fetch, refused unless it is one."""

from __future__ import annotations

import importlib.util
import stat
from pathlib import Path

import certifi
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("rds_ca", ROOT / "deploy" / "rds_ca.py")
assert _spec and _spec.loader
rds_ca = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rds_ca)


def test_a_bundle_is_installed_readable_and_counted(tmp_path):
    dest = tmp_path / "certs" / "rds-global-bundle.pem"
    count = rds_ca.install(dest, Path(certifi.where()))
    assert count > 10 and dest.read_bytes() == Path(certifi.where()).read_bytes()
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644


@pytest.mark.parametrize("content", ["<html>sign in to the Wi-Fi</html>", "", "-----BEGIN CERTIFICATE-----\nnope\n"])
def test_what_is_not_a_bundle_is_refused_and_nothing_is_left(tmp_path, content, capsys):
    bad, dest = tmp_path / "bad.pem", tmp_path / "certs" / "rds.pem"
    bad.write_text(content)
    assert rds_ca.main([str(dest), "--from", str(bad)]) == 1
    assert "rds-ca:" in capsys.readouterr().err
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_the_image_and_the_ami_install_it_where_the_pods_and_units_read_it():
    from infra import pod_specs

    dockerfile = (ROOT / "deploy" / "image" / "Dockerfile").read_text()
    install = (ROOT / "deploy" / "ami" / "install.sh").read_text()
    assert f"deploy/rds_ca.py {pod_specs.RDS_CA_SOURCE}" in dockerfile
    assert '"$PREFIX/certs/rds-global-bundle.pem"' in install and pod_specs.RDS_CA_SOURCE.startswith("/opt/pynomaly/")
