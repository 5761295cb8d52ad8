"""ASGI middleware: request metrics by route template, and a request body size limit."""

from __future__ import annotations

import json
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pynomaly_ops.environment import ENV_NAMES
from service import metrics
from service.errors import ApiError

UNMATCHED = "unmatched"  # one label for every unknown path, so scanners cannot explode the label set


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        in_flight = metrics.HTTP_IN_FLIGHT.labels(method=scope["method"])
        in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            in_flight.dec()
            route = getattr(scope.get("route"), "path", UNMATCHED)
            method = scope["method"]
            metrics.HTTP_REQUESTS.labels(route=route, method=method, status=str(status["code"])).inc()
            metrics.HTTP_DURATION.labels(route=route, method=method).observe(time.perf_counter() - started)


class BodyLimit:
    """Refuse a body over ``max_bytes``: at once when its Content-Length says so, else as soon as more than
    that has arrived (a chunked upload has no length), so no upload can grow an instance's memory."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            error = too_large(f"request body is {int(length)} bytes", self.max_bytes)
            await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", JSON)]})
            await send({"type": "http.response.body", "body": json.dumps(error.body()).encode()})
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:  # raised in the route reading the body: its error handler answers
                raise too_large(f"request body is over {self.max_bytes} bytes", self.max_bytes)
            return message

        await self.app(scope, counted, send)


JSON = b"application/json"


def too_large(what: str, limit: int) -> ApiError:
    return ApiError(413, "too_large", f"{what}; the limit is {limit} ({ENV_NAMES['max_body_bytes']})", "body")
