"""Request bodies under hostile input: read within the byte limit, then decoded and validated off the event loop.

A body is read only after the API key is checked (the routes take no body parameter, so FastAPI never
reads one before its dependencies run) and counted as it arrives, chunked uploads too
(:class:`service.middleware.BodyLimit`). pydantic holds the GIL while it validates, so a thread would
not keep a hostile body off the event loop that answers /health: a body over ``INLINE_BYTES`` is
validated in one of ``processes`` child processes, and a request waiting longer than
``admit_timeout_s`` for one gets 503. Smaller bodies cost at most a few milliseconds and are validated
in place. The request models stop at the first bad item of a list (``fail_fast``) and at the first
unknown field, so a body of a million bad items costs one error, not a million.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from service.errors import ApiError, validation_error

M = TypeVar("M", bound=BaseModel)
log = logging.getLogger(__name__)
INLINE_BYTES = 64 * 1024  # the worst body of this size validates in about 5 ms
TASKS_PER_CHILD = 200  # a child that built a huge object once gives its memory back when it is replaced


class BodyParser:
    """Validates bodies into request models: small ones in place, large ones in ``processes`` children."""

    def __init__(self, processes: int, admit_timeout_s: float) -> None:
        self._processes = processes
        self._slots = asyncio.Semaphore(processes)
        self._admit_timeout_s = admit_timeout_s
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, as the detector's pool: the API process has threads that fork would not copy safely
        context = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(self._processes, mp_context=context, max_tasks_per_child=TASKS_PER_CHILD)

    async def parse(self, request: Request, model: type[M]) -> M:
        raw = await request.body()  # BodyLimit raises 413 as soon as more than the limit has arrived
        if len(raw) <= INLINE_BYTES:
            return validate(model, raw)
        try:
            await asyncio.wait_for(self._slots.acquire(), self._admit_timeout_s)
        except TimeoutError:
            raise ApiError(503, "overloaded", "too many large bodies are being checked at once: retry") from None
        try:
            return await self._in_child(model, raw)
        finally:
            self._slots.release()

    async def _in_child(self, model: type[M], raw: bytes) -> M:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, validate, model, raw)
        except BrokenProcessPool:  # a child died (OOM-killed?): replace the pool; this body is refused
            log.error("body parser process pool broke; restarting it")
            self._pool = self._new_pool()
            raise ApiError(503, "overloaded", "the request body could not be checked: retry") from None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def validate(model: type[M], raw: bytes) -> M:
    """``model`` from JSON bytes, or the API's 400/422 naming what is wrong."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        # include_input=False: the offending values (possibly megabytes) are never copied into the error
        raise validation_error([dict(e) for e in exc.errors(include_url=False, include_input=False)]) from None
