"""The OpenAPI document: each reply's schema, the error body, the statuses each route can answer, and the
limits the service enforces at run time.

The routes build their bodies by hand (the per-point arrays are encoded once, not validated again), so
these models document what the routes send; tests/service/test_contract.py holds them to it, running
Schemathesis with every check against a real service."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from pynomaly_ops.environment import ENV_NAMES
from service.schemas import DetectRequest, JobRequest


class ErrorDetail(BaseModel):
    field: str = Field(description="where, as a client writes it: rows[3][1]")
    message: str


class ErrorInfo(BaseModel):
    code: str = Field(
        description="stable, for programs: malformed_json, invalid_field, too_large, unauthorized, not_found, "
        "method_not_allowed, conflict, overloaded, dependency_unavailable"
    )
    message: str = Field(description="for people: what is wrong and how to fix it")
    field: str | None = Field(None, description="the request field at fault, when there is one")
    details: list[ErrorDetail] | None = Field(None, description="422: every problem found (at most 20)")
    dependency: str | None = Field(None, description="503: the dependency that did not answer")
    hint: str | None = None


class ErrorReply(BaseModel):
    error: ErrorInfo


class Health(BaseModel):
    status: Literal["ok"]
    instance: str


class Readiness(BaseModel):
    status: Literal["ready", "degraded", "unready"] = Field(
        description="degraded: the cache is down (detections still served); unready: the database or queue is"
    )
    instance: str
    checks: dict[str, str] = Field(description='"ok", or what failed, for database, queue and cache')


class Detection(BaseModel):
    """One detection's per-point scores and flags; higher scores are more anomalous."""

    id: str
    n_points: int
    cached: bool = Field(description="the result came from the cache (the same data and options were seen)")
    options: dict[str, Any] = Field(description="the options used, defaults filled in")
    method: Literal["residual", "isolation_forest"]
    model: str = Field(description='the baseline (residual: "seasonal(24)+local(7)") or the forest ("5 trees")')
    threshold: float = Field(description="the score above which a point is flagged")
    n_flagged: int
    inference_ms: float
    scores: list[float]
    flags: list[bool]


class Job(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    status: Literal["queued", "running", "completed", "failed"]
    n_points: int
    attempts: int
    result_key: str | None
    n_flagged: int | None
    error: str | None
    submitted_at: str
    started_at: str | None
    finished_at: str | None


class JobReply(BaseModel):
    job: Job


class JobResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    job_id: str
    options: dict[str, Any]
    scores: list[float]
    flags: list[bool]
    threshold: float
    n_flagged: int


class JobStatus(BaseModel):
    job: Job
    result: JobResult | None = Field(None, description="with ?result=true, once the job has completed")


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers a route documents, each with the error body."""
    return {status: {"model": ErrorReply, "description": ERROR_MEANINGS[status]} for status in statuses}


ERROR_MEANINGS = {
    400: "the body is not valid JSON",
    401: "no API key, or an unknown or revoked one",
    404: "no such job for this API key (job ids are per key: another key's job is not found either)",
    409: "this API key submitted this job_id before with different input",
    413: "the body is over the byte limit, or the series over the point limit: split it",
    422: "a field is missing, of the wrong type or out of range (every problem is listed)",
    503: "the detector is saturated or a dependency is unavailable: retry after Retry-After seconds",
}
PROMETHEUS_TEXT: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "metrics"}
}


# The routes read their bodies themselves, after the API key (service/body.py), so FastAPI cannot see them.
REQUEST_BODIES: dict[tuple[str, str], type[BaseModel]] = {
    ("/api/v1/detect", "post"): DetectRequest,
    ("/api/v1/jobs", "post"): JobRequest,
}


def _add_request_bodies(schema: dict[str, Any]) -> None:
    models = [(model, "validation") for model in REQUEST_BODIES.values()]
    _, definitions = models_json_schema(models, ref_template="#/components/schemas/{model}")  # type: ignore[arg-type]
    schema.setdefault("components", {}).setdefault("schemas", {}).update(definitions["$defs"])
    for (path, method), model in REQUEST_BODIES.items():
        schema["paths"][path][method]["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }


def install(app: FastAPI, max_series_length: int, max_body_bytes: int) -> None:
    """Generate the document once, with this instance's limits written into the request schemas."""

    limits = (
        f"\n\nAt most {max_series_length} points ({ENV_NAMES['max_series_length']}) and"
        f" {max_body_bytes} bytes ({ENV_NAMES['max_body_bytes']}); every row the same length."
    )

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=DESCRIPTION, routes=app.routes)
            _add_request_bodies(schema)
            for name in ("DetectRequest", "JobRequest"):
                request = schema["components"]["schemas"][name]
                arrays = [o for f in ("series", "rows") for o in request["properties"][f]["anyOf"] if "items" in o]
                for option in arrays:
                    option["maxItems"] = max_series_length
                request["description"] += limits
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]


DESCRIPTION = """Anomaly detection on time series (`series`) and multivariate points (`rows`).

Every /api/v1 call needs `Authorization: Bearer <api key>`. Errors answer with
`{"error": {"code", "message", "field"?}}`, naming what is wrong and how to fix it."""
