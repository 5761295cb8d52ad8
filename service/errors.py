"""Errors the API turns into JSON bodies: bad input names its field, a missing dependency names itself."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any


class ApiError(Exception):
    """A request the service refuses, with the HTTP status and a body naming what to fix."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.extra = extra

    def __reduce__(self) -> tuple[Any, ...]:
        # An error raised in a child process (service/body.py) comes back pickled: rebuild it whole.
        return (_rebuild, (type(self), self.status, self.code, self.message, self.field, self.extra))

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        error.update(self.extra)
        return {"error": error}


def _rebuild(kind: type[ApiError], status: int, code: str, message: str, field: str | None, extra: dict) -> ApiError:
    error = ApiError.__new__(kind)
    ApiError.__init__(error, status, code, message, field, **extra)
    return error


class DependencyUnavailable(ApiError):
    """PostgreSQL, the queue or the object store did not answer in time: retry later (503)."""

    def __init__(self, dependency: str, detail: str) -> None:
        super().__init__(503, "dependency_unavailable", f"{dependency} is unavailable: {detail}", dependency=dependency)


def field_path(loc: Sequence[Any]) -> str:
    """Render a pydantic error location as the field a client would write: ``rows[3][1]``, ``options.x``."""
    parts = list(loc[1:] if loc and loc[0] in ("body", "path", "query", "header") else loc)
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


_HINTS = {
    "finite_number": "must be a finite number (NaN and Infinity are not allowed)",
    "json_invalid": "is not valid JSON",
    "missing": "is required",
    "float_type": "must be a number",
    "extra_forbidden": "is not a known field (remove it)",
}


def _describe(error: dict[str, Any]) -> str:
    return _HINTS.get(error.get("type", ""), error.get("msg", "is invalid"))


def validation_error(errors: Iterable[dict[str, Any]], listed: int = 20) -> ApiError:
    """One 4xx error from pydantic's list: the first problem leads, the first ``listed`` are listed."""
    errors = list(islice(errors, listed))
    details = [{"field": field_path(e.get("loc", ())), "message": _describe(e)} for e in errors]
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        where = first.get("ctx", {}).get("error", "")
        return ApiError(400, "malformed_json", f"request body is not valid JSON ({where})", field="body")
    lead = details[0] if details else {"field": "body", "message": "is invalid"}
    if first.get("type") == "too_long" and lead["field"] in ("series", "rows"):
        limit = first.get("ctx", {}).get("max_length")
        return ApiError(413, "too_large", f"{lead['field']} has more than {limit} points: split it", lead["field"])
    message = f"{lead['field']}: {lead['message']}"
    return ApiError(422, "invalid_field", message, field=lead["field"], details=details)
