"""The HTTP API: FastAPI on uvicorn. ``python -m service.api`` (or ``pynomaly-api``) serves it.

/health never touches a dependency; /ready asks PostgreSQL (is it the writable primary?),
the queue and the cache, without writing anything; /api/v1 needs an API key, checked
before the body is read. CPU-heavy detection, large bodies' validation and blocking I/O
run off the event loop (sync work in the threadpool; detection and validation in process
pools), so /health keeps answering under load and under hostile bodies. /metrics and
/openapi.json are for the instance's own port: the load balancers do not route them, and
the docs pages are served only with PYNOMALY_DOCS=true.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from pynomaly_ops.baselines import load as load_baselines
from service import auth, db, metrics, openapi, store
from service.body import BodyParser
from service.cache import ResultCache
from service.config import ConfigError, Settings, load_settings
from service.detector import Detector
from service.errors import ApiError, DependencyUnavailable, validation_error
from service.middleware import BodyLimit, RequestMetrics
from service.migrations import Schema
from service.queue import JobQueue
from service.schemas import DetectRequest, JobRequest
from service.storage import ResultStore

log = logging.getLogger("service.api")
READY_DB_TIMEOUT_S = 2.0


@dataclass
class Services:
    settings: Settings
    pool: ConnectionPool
    schema: Schema
    cache: ResultCache
    queue: JobQueue
    results: ResultStore
    detector: Detector
    keys: auth.Authenticator
    bodies: BodyParser

    @classmethod
    def start(cls, settings: Settings) -> Services:
        pool = db.open_pool(settings)
        abuse = load_baselines().abuse
        return cls(
            settings=settings,
            pool=pool,
            schema=Schema(pool, settings.bootstrap_api_key).start(),
            cache=ResultCache(settings),
            queue=JobQueue(settings),
            results=ResultStore(settings),
            detector=Detector(settings.detector_processes, settings.detect_admit_timeout_s),
            keys=auth.Authenticator(pool, settings.auth_cache_s, abuse.refused_key_cache_s),
            bodies=BodyParser(abuse.parse_concurrency, settings.detect_admit_timeout_s),
        )

    def close(self) -> None:
        self.schema.stop()
        self.bodies.close()
        self.detector.close()
        self.cache.close()
        self.pool.close(timeout=5)


async def _services(request: Request) -> Services:
    return request.app.state.services  # async: a sync dependency would cost a threadpool hop per request


ServicesDep = Annotated[Services, Depends(_services)]


BEARER = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer <key>`")


async def api_key(
    request: Request,
    services: ServicesDep,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],  # declares the scheme in OpenAPI
) -> str:
    """The caller's key name; also refuses /api/v1 until the schema is in place.

    Async, with the database look-up in the threadpool only on a cache miss: most
    requests then make a single threadpool hop (the endpoint's), not two. The raw
    header is checked here, so a malformed one gets this service's own 401.
    """
    authorization = request.headers.get("authorization")
    if not services.schema.ready.is_set():
        raise DependencyUnavailable("database", f"schema not ready yet ({services.schema.last_error})")
    name = services.keys.cached(authorization)
    if name is None:
        name = await run_in_threadpool(services.keys.check, authorization)
    return name


KeyDep = Annotated[str, Depends(api_key)]


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics.INSTANCE.info({"instance_id": settings.instance_id})
        app.state.services = Services.start(settings)
        log.info("instance %s ready to serve", settings.instance_id)
        try:
            yield
        finally:
            app.state.services.close()
            log.info("instance %s stopped", settings.instance_id)

    app = FastAPI(
        title="Pynomaly reference service",
        version="1",
        lifespan=lifespan,
        docs_url="/docs" if settings.docs else None,
        redoc_url="/redoc" if settings.docs else None,
    )
    _add_error_handlers(app)
    _add_routes(app)
    openapi.install(app, settings.max_series_length, settings.max_body_bytes)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics)
    return app


def _error_response(error: ApiError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    headers = dict(headers or {})
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if error.status == 503:
        headers["Retry-After"] = "1"
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(validation_error(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error_response(ApiError(exc.status_code, code, str(exc.detail)), exc.headers)  # 405: Allow


def _add_routes(app: FastAPI) -> None:
    @app.get("/health", response_model=openapi.Health)
    async def health(request: Request) -> dict[str, str]:
        return {"status": "ok", "instance": request.app.state.services.settings.instance_id}

    @app.get(
        "/ready",
        response_model=openapi.Readiness,
        responses={503: {"model": openapi.Readiness, "description": "the database or the queue is not ready"}},
    )
    def ready(services: ServicesDep) -> JSONResponse:
        checks = {
            "database": _terse("database", _check_database(services)),
            "queue": _terse("queue", services.queue.check()),
            "cache": _terse("cache", services.cache.check()),
        }
        essential_ok = checks["database"] == "ok" and checks["queue"] == "ok"
        status = "unready" if not essential_ok else "ready" if checks["cache"] == "ok" else "degraded"
        body = {"status": status, "instance": services.settings.instance_id, "checks": checks}
        return JSONResponse(body, status_code=200 if essential_ok else 503)

    @app.get("/metrics", response_class=Response, responses=openapi.PROMETHEUS_TEXT)
    async def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/api/v1/detect",
        response_model=openapi.Detection,
        responses=openapi.errors(400, 401, 413, 422, 503),
    )
    async def detect(request: Request, key_name: KeyDep, services: ServicesDep) -> Response:
        body = await services.bodies.parse(request, DetectRequest)
        return Response(await run_in_threadpool(_detect, services, body, key_name), media_type="application/json")

    @app.post(
        "/api/v1/jobs",
        status_code=202,
        response_model=openapi.JobReply,
        response_description="a new job, queued (ids are per API key: another key's job of this id is not this one)",
        responses={
            200: {
                "model": openapi.JobReply,
                "description": "this key submitted this job_id and input before: that job",
            },
            **openapi.errors(400, 401, 409, 413, 422, 503),
        },
    )
    async def submit_job(request: Request, key_name: KeyDep, services: ServicesDep) -> JSONResponse:
        body = await services.bodies.parse(request, JobRequest)
        job, created = await run_in_threadpool(_submit, services, body, key_name)
        return JSONResponse({"job": job}, status_code=202 if created else 200)

    @app.get(
        "/api/v1/jobs/{job_id}",
        response_model=openapi.JobStatus,
        responses=openapi.errors(401, 404, 422, 503),
    )
    def job_status(job_id: uuid.UUID, key_name: KeyDep, services: ServicesDep, result: bool = False) -> JSONResponse:
        job = store.get_job(services.pool, store.JobRef(key_name, job_id))
        if job is None:  # another key's job of this id is answered the same: for this key it does not exist
            raise ApiError(404, "not_found", f"no job {job_id} for this API key", field="job_id")
        body: dict[str, Any] = {"job": _job_view(job)}
        if result and job["status"] == "completed":
            body["result"] = services.results.get(job["result_key"])
        return JSONResponse(body)


def _check_database(services: Services) -> str:
    if not services.schema.ready.is_set():
        return f"failed: schema not ready ({services.schema.last_error})"
    try:
        store.probe_primary(services.pool, READY_DB_TIMEOUT_S)
    except Exception as exc:  # any failure means "not ready"; the log says which
        return f"failed: {type(exc).__name__}: {exc}"
    return "ok"


def _terse(dependency: str, outcome: str) -> str:
    """ "ok", or only the word before the colon: what failed is logged, never shown to a caller."""
    if outcome == "ok":
        return outcome
    log.warning("readiness: %s %s", dependency, outcome)
    return outcome.partition(":")[0]


def _detect(services: Services, body: DetectRequest, key_name: str) -> bytes:
    """Detect, store, answer. The per-point arrays are JSON-encoded once, for both the row and the reply."""
    started = time.perf_counter()
    body.check_input(services.settings.max_series_length)
    options = body.resolved_options(services.settings.detector_trees)
    input_hash = body.input_hash(options)
    result = services.cache.get(key_name, input_hash)
    cached = result is not None
    if result is None:
        result = services.detector.run(body.data, options)
        services.cache.put(key_name, input_hash, result)
    detection = store.Detection(
        id=uuid.uuid4(),
        key_name=key_name,
        input_hash=input_hash,
        data=body.data,
        n_features=body.n_features,
        options=options,
        result=result,
        scores_json=json.dumps(result["scores"]),
        flags_json=json.dumps(result["flags"]),
        cached=cached,
        total_ms=(time.perf_counter() - started) * 1000,
        instance=services.settings.instance_id,
    )
    store.save_detection(services.pool, detection)  # answered only once stored: no acknowledged write is lost
    summary = {
        "id": str(detection.id),
        "n_points": len(body.data),
        "cached": cached,
        "options": options,
        "method": result["method"],
        "model": result["model"],
        "threshold": result["threshold"],
        "n_flagged": result["n_flagged"],
        "inference_ms": round(result["inference_ms"], 3),
    }
    arrays = f', "scores": {detection.scores_json}, "flags": {detection.flags_json}}}'
    return (json.dumps(summary)[:-1] + arrays).encode()


def _submit(services: Services, body: JobRequest, key_name: str) -> tuple[dict[str, Any], bool]:
    body.check_input(services.settings.max_series_length)
    options = body.resolved_options(services.settings.detector_trees)
    input_hash = body.input_hash(options)
    ref = store.JobRef(key_name, body.job_id or uuid.uuid4())
    job, created = store.create_job(services.pool, ref, input_hash, body.data, options)
    if job["input_hash"] != input_hash:  # only this key's own jobs can conflict: ids are per key
        raise ApiError(409, "conflict", f"job {ref.id} exists with different input: use a new job_id", field="job_id")
    if job["status"] == "queued":  # new, or a retried submission whose message may never have been sent
        try:
            services.queue.send(key_name, str(ref.id), job["submitted_at"].timestamp())
        except DependencyUnavailable:
            if created:
                store.delete_queued_job(services.pool, ref)
            raise
    return _job_view(job), created


def _job_view(job: dict[str, Any]) -> dict[str, Any]:
    view = {k: v for k, v in job.items() if k not in ("key_name", "input_hash")}
    for k, v in view.items():
        if hasattr(v, "isoformat"):
            view[k] = v.isoformat()
        elif isinstance(v, uuid.UUID):
            view[k] = str(v)
    return view


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.exit(f"pynomaly-api: {exc}")
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
        access_log=False,
        log_level="info",
    )
    # uvicorn handles SIGTERM gracefully, then re-raises it to the handler it found at start-up:
    # with this one in place that re-raise is a no-op and a graceful stop exits 0.
    signal.signal(signal.SIGTERM, lambda *_: log.info("stopped on SIGTERM"))
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
