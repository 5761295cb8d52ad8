"""Upload a finished pg_dump file to the backups bucket (the nightly CronJob's last step).

The key is ``<prefix>/<UTC timestamp>-<file name>`` so nightly dumps never
overwrite each other; the bucket's lifecycle rules decide how long they stay.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path


def backup_key(prefix: str, dump: Path, now: datetime) -> str:
    return f"{prefix.strip('/')}/{now:%Y%m%dT%H%M%SZ}-{dump.name}"


def upload(dump: Path, bucket: str, prefix: str, client=None, now: datetime | None = None) -> str:
    import boto3

    if not dump.is_file() or dump.stat().st_size == 0:
        raise SystemExit(f"upload-backup: {dump} is missing or empty; pg_dump did not produce a dump")
    client = client or boto3.client("s3")
    key = backup_key(prefix, dump, now or datetime.now(UTC))
    # No encryption header: the bucket's default (SSE-KMS with the stack's key) applies; naming aws:kms without a
    # key id here would pick the AWS-managed aws/s3 key instead.
    client.upload_file(str(dump), bucket, key)
    return key


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, required=True)
    parser.add_argument("--bucket", default=os.environ.get("BACKUPS_BUCKET"), help="default: $BACKUPS_BUCKET")
    parser.add_argument("--prefix", default="postgres")
    args = parser.parse_args(argv)
    if not args.bucket:
        raise SystemExit("upload-backup: no bucket given; pass --bucket or set BACKUPS_BUCKET")
    key = upload(args.file, args.bucket, args.prefix)
    print(f"upload-backup: s3://{args.bucket}/{key}", file=sys.stderr)


if __name__ == "__main__":
    main()
