"""Job results in S3, one object per job (key name and id), so reprocessing a job overwrites rather than
duplicates, and two keys' jobs of the same id never share an object."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from service import aws
from service.config import Settings
from service.errors import DependencyUnavailable


def result_key(key_name: str, job_id: str) -> str:
    """Percent-encoded, the key name is one path segment whatever it holds (a '/' cannot make it another's)."""
    return f"jobs/{quote(key_name, safe='')}/{job_id}/result.json"


class ResultStore:
    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.artifacts_bucket
        self._s3 = aws.client(settings, "s3")

    def put(self, key_name: str, job_id: str, result: dict[str, Any]) -> str:
        key = result_key(key_name, job_id)
        self._s3.put_object(
            Bucket=self.bucket, Key=key, Body=json.dumps(result).encode(), ContentType="application/json"
        )
        return key

    def get(self, key: str) -> dict[str, Any]:
        try:
            return json.loads(self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except aws.AWS_ERRORS as exc:
            raise DependencyUnavailable("object storage", str(exc)) from exc
