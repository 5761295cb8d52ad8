"""boto3 clients with bounded timeouts; ``PYNOMALY_AWS_ENDPOINT_URL`` points them at a local
AWS-compatible server (moto), unset on AWS."""

from __future__ import annotations

from typing import Any, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from service.config import Settings

# Errors meaning "AWS did not do it": a 503 for the API, a retry (redelivery) for the worker.
AWS_ERRORS = (BotoCoreError, ClientError)


def client(settings: Settings, service: Literal["s3", "sqs"], *, timeout_s: float = 25, attempts: int = 3) -> Any:
    """A client; the default read timeout outlasts an SQS long poll (20 s at most)."""
    config = Config(connect_timeout=2, read_timeout=timeout_s, retries={"max_attempts": attempts, "mode": "standard"})
    return boto3.session.Session().client(service, endpoint_url=settings.aws_endpoint_url, config=config)
