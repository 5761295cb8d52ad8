"""ASGI middleware: request metrics by route template, and a request body size limit."""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pynomaly_ops.environment import ENV_NAMES
from service import metrics

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
    """Refuse a body whose Content-Length exceeds ``max_bytes`` before reading it, so a huge upload
    cannot exhaust memory. (Chunked uploads without a length are bounded by the series limit only.)"""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _reject(send, int(length), self.max_bytes)
            return
        await self.app(scope, receive, send)


async def _reject(send: Send, size: int, limit: int) -> None:
    body: dict[str, Any] = {
        "error": {
            "code": "too_large",
            "field": "body",
            "message": f"request body is {size} bytes; the limit is {limit} ({ENV_NAMES['max_body_bytes']})",
        }
    }
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": payload})
