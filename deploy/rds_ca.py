"""Fetch the RDS certificate bundle the service verifies the database server against (``sslmode=verify-full``).

Run where the internet is reachable: by deploy/ami/install.sh when the AMI is baked and by the image build
(deploy/image/Dockerfile). It refuses a file that is not a bundle of CA certificates, so a captive portal's
HTML or a truncated download never reaches an instance. ``--from FILE`` installs a bundle already fetched (an
air-gapped bake, or a private mirror).

    python deploy/rds_ca.py /opt/pynomaly/certs/rds-global-bundle.pem [--from FILE]

Standard library only: it runs before the project's dependencies are installed.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import tempfile
import urllib.request
from pathlib import Path

URL = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"  # every region's CAs (RDS user guide)


def ca_count(path: Path) -> int:
    """How many CA certificates ``path`` holds; a ValueError if it is not a PEM bundle."""
    try:
        context = ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"{path} is not a PEM bundle of certificates ({exc})") from None
    count = int(context.cert_store_stats()["x509_ca"])
    if count == 0:
        raise ValueError(f"{path} holds no CA certificate")
    return count


def install(dest: Path, source: Path | None = None, url: str = URL) -> int:
    """Write the bundle to ``dest`` (mode 0644, replaced atomically) once it is checked; return its CA count."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            if source is not None:
                out.write(source.read_bytes())
            else:
                with urllib.request.urlopen(url, timeout=30) as answer:
                    out.write(answer.read())
        count = ca_count(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
        return count
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--from", dest="source", type=Path, help="a bundle already fetched (default: download)")
    args = parser.parse_args(argv)
    try:
        count = install(args.dest, args.source)
    except (OSError, ValueError) as exc:
        print(f"rds-ca: {exc}; the bundle is at {URL}", file=sys.stderr)
        return 1
    print(f"rds-ca: {args.dest}: {count} CA certificates", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
