"""Per-request bookkeeping as plain ASGI middleware (it must not buffer streams): the request
id (``x-request-id`` accepted or made, and returned), request metrics, one access-log line."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.observability import REQUEST_ID, Metrics

log = logging.getLogger("gateway.access")

ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/ready", "/metrics")
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def route_label(path: str) -> str:
    """A bounded label set: unknown paths must not grow the metrics without end."""
    if path in ROUTES:
        return path
    return "/admin" if path.startswith("/admin/") else "other"


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _ID.match(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        route = route_label(scope["path"])
        seen: dict[str, str] = {"status": "500", "cache": "none", "backend": ""}

        async def send_with_context(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = request_id
                seen["status"] = str(message["status"])
                seen["cache"] = headers.get("x-cache", "none")
                seen["backend"] = headers.get("x-gateway-backend", "")
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                self._done(route, seen, time.perf_counter() - started, scope)
            await send(message)

        try:
            await self.app(scope, receive, send_with_context)
        finally:
            REQUEST_ID.reset(token)

    def _done(self, route: str, seen: dict[str, str], seconds: float, scope: Scope) -> None:
        self.metrics.requests.labels(route, seen["status"], seen["cache"]).inc()
        if route.startswith("/v1/") and route != "/v1/models":
            model = scope.get("state", {}).get("model", "")
            self.metrics.request_seconds.labels(
                route, seen["cache"], seen["backend"], model
            ).observe(seconds)
        log.info(
            "%s %s %s",
            scope["method"],
            scope["path"],
            seen["status"],
            extra={
                "status": int(seen["status"]),
                "cache": seen["cache"],
                "ms": round(seconds * 1000, 2),
            },
        )
