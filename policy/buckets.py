"""S3 buckets and their settings resources: what several rules share.

With pulumi-aws 7 a bucket's encryption, versioning, policy and public-access block are resources of their own
(the bucket's inline arguments are deprecated), each pointing at its bucket through its ``bucket`` property. A
rule on "every bucket" is therefore a linked rule: it finds each bucket's settings resources by that reference.
"""

from __future__ import annotations

from pulumi_policy import PolicyResource

from policy.resource_types import BUCKET, LOAD_BALANCER
from policy.rule import Stack, referenced


def settings_of(bucket: PolicyResource, stack: Stack, settings_type: str) -> list[PolicyResource]:
    """The bucket's settings resources of ``settings_type``."""
    return stack.referencing(bucket, settings_type, "bucket")


def is_access_log_bucket(bucket: PolicyResource, stack: Stack) -> bool:
    """A load balancer writes its access logs to ``bucket``."""
    return any(b.urn == bucket.urn for lb in stack.of_type(LOAD_BALANCER) for b in referenced(lb, "accessLogs", BUCKET))
