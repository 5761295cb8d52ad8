"""Request bodies, validated strictly: wrong types and NaN/Infinity are refused, unknown fields too,
so a mistyped option is reported rather than silently ignored."""

from __future__ import annotations

import hashlib
import json
import uuid
from array import array
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pynomaly_ops.environment import ENV_NAMES
from service.errors import ApiError

MAX_FEATURES = 100
MAX_TREES = 200
MAX_CONTAMINATION = 0.5  # IsolationForest's own bound

# strict: "1.5" (a string) or true (a bool) is not a number; integers are accepted.
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Row = Annotated[list[Finite], Field(min_length=1, max_length=MAX_FEATURES)]
Data = list[float] | list[list[float]]


class DetectRequest(BaseModel):
    """One univariate ``series`` or multivariate ``rows`` (one list of features per point)."""

    model_config = ConfigDict(extra="forbid")

    series: Annotated[list[Finite], Field(min_length=1)] | None = None
    rows: Annotated[list[Row], Field(min_length=1)] | None = None
    contamination: float | str = "auto"
    n_estimators: Annotated[int, Field(strict=True, ge=1, le=MAX_TREES)] | None = None

    @field_validator("contamination", mode="before")
    @classmethod
    def _contamination(cls, value: Any) -> float | str:
        ok_number = isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= MAX_CONTAMINATION
        if value == "auto" or ok_number:
            return value
        raise ValueError(f'must be "auto" or a number in (0, {MAX_CONTAMINATION}], the expected share of anomalies')

    @field_validator("rows")
    @classmethod
    def _rectangular(cls, rows: list[list[float]] | None) -> list[list[float]] | None:
        if rows is not None and len({len(r) for r in rows}) > 1:
            raise ValueError("every row must have the same number of features")
        return rows

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
        return {"contamination": self.contamination, "n_estimators": self.n_estimators or default_trees}

    def input_hash(self, options: dict[str, Any]) -> str:
        """Same data and options, same hash: the cache key and the job's idempotency check."""
        header = json.dumps({"field": self.field, "n_features": self.n_features, "options": options}, sort_keys=True)
        flat = self.series if self.series is not None else [x for row in self.rows or [] for x in row]
        digest = hashlib.sha256(header.encode())
        digest.update(array("d", flat).tobytes())  # exact float64 bits, and much cheaper than JSON
        return digest.hexdigest()


class JobRequest(DetectRequest):
    """A batch detection; ``job_id`` makes the submission idempotent (the same id returns the same job)."""

    job_id: uuid.UUID | None = None
