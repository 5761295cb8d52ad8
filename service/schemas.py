"""Request bodies, validated strictly: wrong types and NaN/Infinity are refused, unknown fields too,
so a mistyped option is reported rather than silently ignored.

Hostile bodies cost little: every list stops at its first bad item (``fail_fast``) and at
``MAX_POINTS``, and the first unknown field ends validation, so the error list is short whatever the
body holds (service/body.py)."""

from __future__ import annotations

import hashlib
import json
import uuid
from array import array
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from pynomaly_ops.environment import ENV_NAMES
from service.detector import DEFAULT_THRESHOLDS, FOREST, RESIDUAL, resolve_method
from service.errors import ApiError

MAX_FEATURES = 100
MAX_TREES = 200
MAX_CONTAMINATION = 0.5  # IsolationForest's own bound
MAX_POINTS = 1_000_000  # the schema's own bound; the configured limit (max_series_length) is at most this
MAX_LISTED = 20  # problems listed in one error body

# strict: "1.5" (a string) or true (a bool) is not a number; integers are accepted.
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Row = Annotated[list[Finite], Field(min_length=1, max_length=MAX_FEATURES, fail_fast=True)]
Data = list[float] | list[list[float]]


def _is(field: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": [field], "properties": {field: schema}}


ARRAY, NUMBER, INTEGER = {"type": "array"}, {"type": "number"}, {"type": "integer"}
# What the validators below enforce, for the OpenAPI document: exactly one input, and no option that
# contradicts another.
REQUEST_RULES: dict[str, Any] = {
    "oneOf": [_is("series", ARRAY), _is("rows", ARRAY)],
    "not": {
        "anyOf": [
            {"allOf": [_is("threshold", NUMBER), _is("contamination", NUMBER)]},
            {"allOf": [_is("method", {"const": "residual"}), _is("rows", ARRAY)]},
            {"allOf": [_is("method", {"const": "residual"}), _is("n_estimators", INTEGER)]},
        ]
    },
}
CONTAMINATION_SCHEMA = {
    "anyOf": [{"const": "auto"}, {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_CONTAMINATION}],
    "default": "auto",
    "description": "flag this share of the highest scores instead of cutting at the threshold",
}


class DetectRequest(BaseModel):
    """One univariate ``series`` or multivariate ``rows`` (one list of features per point)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=REQUEST_RULES)

    series: Annotated[list[Finite], Field(min_length=1, max_length=MAX_POINTS, fail_fast=True)] | None = None
    rows: Annotated[list[Row], Field(min_length=1, max_length=MAX_POINTS, fail_fast=True)] | None = None
    method: Literal["auto", "residual", "isolation_forest"] = Field(
        "auto",
        description="auto: residual for a series, isolation_forest for rows or when n_estimators is sent",
    )
    contamination: Annotated[float | str, WithJsonSchema(CONTAMINATION_SCHEMA)] = "auto"
    threshold: Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)] | None = Field(
        None,
        description=f"flag scores above this (default: {DEFAULT_THRESHOLDS[RESIDUAL]:g} robust sigmas for residual,"
        f" {DEFAULT_THRESHOLDS[FOREST]:g} for the forest)",
    )
    n_estimators: Annotated[int, Field(strict=True, ge=1, le=MAX_TREES)] | None = Field(
        None, description="trees of the forest (default PYNOMALY_DETECTOR_TREES)"
    )

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        """Unknown fields are refused before any field is validated: one error, not one per key sent."""
        if isinstance(data, dict):
            unknown = [k for k in data if k not in cls.model_fields]
            if unknown:
                details = [{"field": k, "message": "is not a known field (remove it)"} for k in unknown[:MAX_LISTED]]
                raise ApiError(
                    422, "invalid_field", f"{unknown[0]}: is not a known field (remove it)", unknown[0], details=details
                )
        return data

    @field_validator("contamination", mode="before")
    @classmethod
    def _contamination(cls, value: Any) -> float | str:
        ok_number = isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= MAX_CONTAMINATION
        if value == "auto" or ok_number:
            return value
        raise ValueError(f'must be "auto" or a number in (0, {MAX_CONTAMINATION}], the expected share of anomalies')

    @field_validator("n_estimators", mode="before")
    @classmethod
    def _integral(cls, value: Any) -> Any:
        """183.0 is an integer to JSON Schema (and so to generated clients): accepted as 183."""
        return int(value) if isinstance(value, float) and value.is_integer() else value

    @field_validator("rows")
    @classmethod
    def _rectangular(cls, rows: list[list[float]] | None) -> list[list[float]] | None:
        if rows is not None and len({len(r) for r in rows}) > 1:
            raise ValueError("every row must have the same number of features")
        return rows

    @model_validator(mode="after")
    def _consistent_options(self) -> DetectRequest:
        if self.threshold is not None and self.contamination != "auto":
            raise ValueError("send either 'threshold' (a score cut) or 'contamination' (a share to flag), not both")
        if self.method == "residual" and self.rows is not None:
            raise ValueError("method 'residual' scores a series: send 'series', or method 'isolation_forest' for rows")
        if self.n_estimators is not None and self.method == "residual":
            raise ValueError("'n_estimators' is for method 'isolation_forest': send that method, or drop it")
        return self

    @property
    def resolved_method(self) -> str:
        return resolve_method(self.method, univariate=self.rows is None, trees_asked=self.n_estimators is not None)

    @property
    def data(self) -> Data:
        """The input as sent: a flat series, or rows of features."""
        return self.series if self.series is not None else self._rows()

    @property
    def n_features(self) -> int:
        return 1 if self.series is not None else len(self._rows()[0])

    def _rows(self) -> list[list[float]]:
        if self.rows is None:  # check_input refuses a request without either input first
            raise ValueError("neither 'series' nor 'rows' was sent")
        return self.rows

    @property
    def field(self) -> str:
        return "series" if self.series is not None else "rows"

    def check_input(self, max_length: int) -> None:
        """Checks pydantic cannot express: exactly one input, and the configured length limit."""
        if (self.series is None) == (self.rows is None):
            raise ApiError(
                422, "invalid_field", "send exactly one of 'series' (numbers) or 'rows' (lists of numbers)", "series"
            )
        n = len(self.data)
        if n > max_length:
            raise ApiError(
                413,
                "too_large",
                f"{self.field} has {n} points; the limit is {max_length} ({ENV_NAMES['max_series_length']}): split it",
                field=self.field,
            )

    def resolved_options(self, default_trees: int) -> dict[str, Any]:
        """The options the detection runs with, defaults filled in: stored with it and part of its cache key."""
        options: dict[str, Any] = {
            "method": self.resolved_method,
            "contamination": self.contamination,
            "threshold": self.threshold,
        }
        if options["method"] == FOREST:
            options["n_estimators"] = self.n_estimators or default_trees
        return options

    def input_hash(self, options: dict[str, Any]) -> str:
        """Same data and options, same hash: the cache key and the job's idempotency check."""
        header = json.dumps({"field": self.field, "n_features": self.n_features, "options": options}, sort_keys=True)
        flat = self.series if self.series is not None else [x for row in self.rows or [] for x in row]
        digest = hashlib.sha256(header.encode())
        digest.update(array("d", flat).tobytes())  # exact float64 bits, and much cheaper than JSON
        return digest.hexdigest()


class JobRequest(DetectRequest):
    """A batch detection; ``job_id`` makes the submission idempotent (the same id returns the same job).
    Job ids are per API key: another key's job of the same id is another job, unseen by this key."""

    job_id: uuid.UUID | None = None
