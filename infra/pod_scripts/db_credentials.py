"""Write the database user and password from Secrets Manager into a libpq service file.

Runs in the API, worker and backup pods with the pod's IRSA role, so no
password is ever in the Pulumi state, a manifest or an environment variable:
libpq reads the file (PGSERVICEFILE) on every new connection, and the DSN in
the ConfigMap says ``service=<name>``. With ``--refresh-s`` it keeps the file
current (a native sidecar), so a rotated password reaches new connections
without a restart.

With ``--redis-secret-arn`` (the API and worker pods) it also writes the Redis
AUTH token, a plain-string secret, to ``--redis-out`` in the same memory
volume; the service reads that file (PYNOMALY_REDIS_PASSWORD_FILE) on every
new Redis connection.

With ``--ca-out`` (PGSSLROOTCERT) it also copies the RDS CA bundle the image or AMI carries (``--ca-source``)
beside them, so every container of the pod, pg_dump's (another image) included, verifies the server with it.

Uses only boto3 (in the service image) and the standard library.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

CA_SOURCE = "/opt/pynomaly/certs/rds-global-bundle.pem"  # where the image and the AMI carry it (infra/pod_specs.py)


def service_file_text(secret_string: str, service: str) -> str:
    """A libpq service file section holding the secret's ``username`` and ``password``."""
    try:
        secret = json.loads(secret_string)
        user, password = secret["username"], secret["password"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"db-credentials: the secret must be JSON with username and password ({exc!r})") from None
    for key, value in (("username", user), ("password", password)):
        if "\n" in value or "\r" in value:
            raise SystemExit(f"db-credentials: the secret's {key} contains a line break; libpq cannot read it")
    return f"[{service}]\nuser={user}\npassword={password}\n"


def redis_password_text(secret_string: str) -> str:
    """The AUTH token as the file's content: one line, not empty."""
    token = secret_string.strip()
    if not token or "\n" in token or "\r" in token:
        raise SystemExit("db-credentials: the Redis AUTH secret must be one non-empty line")
    return token + "\n"


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with a file only its owner can read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def refresh(secret_arn: str, out: Path, service: str, client=None) -> None:
    import boto3

    client = client or boto3.client("secretsmanager")
    secret = client.get_secret_value(SecretId=secret_arn)["SecretString"]
    write_private(out, service_file_text(secret, service))


def refresh_redis(secret_arn: str, out: Path, client=None) -> None:
    import boto3

    client = client or boto3.client("secretsmanager")
    write_private(out, redis_password_text(client.get_secret_value(SecretId=secret_arn)["SecretString"]))


def copy_ca(source: Path, out: Path) -> None:
    """The CA bundle, checked to be one (a missing or broken bundle would fail every connection's TLS)."""
    try:
        text = source.read_text()
    except OSError as exc:
        raise SystemExit(
            f"db-credentials: the RDS CA bundle {source} cannot be read ({exc}); deploy/rds_ca.py "
            "puts it there when the image or the AMI is built"
        ) from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise SystemExit(f"db-credentials: {source} holds no PEM certificate; rebuild with deploy/rds_ca.py")
    write_private(out, text)


def refresh_all(args: argparse.Namespace) -> None:
    refresh(args.secret_arn, args.out, args.service)
    if args.redis_secret_arn:
        refresh_redis(args.redis_secret_arn, args.redis_out)
    if args.ca_out:
        copy_ca(args.ca_source, args.ca_out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secret-arn", default=os.environ.get("DB_SECRET_ARN"), help="default: $DB_SECRET_ARN")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("PGSERVICEFILE", "pg_service.conf")))
    parser.add_argument("--service", default=os.environ.get("PGSERVICE", "pynomaly"))
    parser.add_argument(
        "--redis-secret-arn", default=os.environ.get("REDIS_AUTH_SECRET_ARN"), help="default: $REDIS_AUTH_SECRET_ARN"
    )
    parser.add_argument(
        "--redis-out", type=Path, default=Path(os.environ.get("PYNOMALY_REDIS_PASSWORD_FILE", "redis-password"))
    )
    parser.add_argument("--ca-out", type=Path, default=os.environ.get("PGSSLROOTCERT"), help="default: $PGSSLROOTCERT")
    parser.add_argument("--ca-source", type=Path, default=Path(os.environ.get("DB_CA_SOURCE", CA_SOURCE)))
    parser.add_argument("--refresh-s", type=float, default=0, help="keep refreshing at this period (0: write once)")
    args = parser.parse_args(argv)
    if not args.secret_arn:
        raise SystemExit("db-credentials: no secret given; pass --secret-arn or set DB_SECRET_ARN")
    refresh_all(args)
    written = [args.out, *([args.redis_out] if args.redis_secret_arn else []), *([args.ca_out] if args.ca_out else [])]
    print(f"db-credentials: wrote {', '.join(map(str, written))}", file=sys.stderr)
    while args.refresh_s > 0:
        # A refresh period, not a wait for some state: the secret may rotate at any time.
        time.sleep(args.refresh_s)
        try:
            refresh_all(args)
        except Exception as exc:  # keep the last good files; report and retry next period
            print(f"db-credentials: refresh failed, keeping the previous files: {exc}", file=sys.stderr)


if __name__ == "__main__":
    main()
