"""Schemathesis hooks for the contract test: the one rule of the request bodies that JSON Schema cannot state.

Every row of ``rows`` must have the same number of features (the OpenAPI document says so in words). A
generated body whose rows differ in length is refused, rightly, with a 422; it is dropped here so that
Schemathesis does not count a schema-valid but ragged body as wrongly rejected.
"""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.hook
def filter_body(context: Any, body: Any) -> bool:
    rows = body.get("rows") if isinstance(body, dict) else None
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        return True
    return len({len(row) for row in rows}) <= 1
