"""Per-request bookkeeping as plain ASGI middleware (it must not buffer streams): the request
id (``x-request-id`` accepted or made, and returned), request metrics, one access-log line.

The access line carries what handlers ``annotate()`` (model, tenant; the prompt only when
``log_prompts`` is on). Probes, scrapes and dashboard polls log at debug level so that the
info-level log stays one line per real request.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.observability import REQUEST_FIELDS, REQUEST_ID, REQUEST_STARTED, Metrics

log = logging.getLogger("gateway.access")

ROUTES = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/messages",
    "/v1/models",
    "/health",
    "/ready",
    "/metrics",
)
COMPLETION_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages")
QUIET_ROUTES = ("/health", "/ready", "/metrics", "/dashboard", "/playground")
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def route_label(path: str) -> str:
    """A bounded label set: unknown paths must not grow the metrics without end."""
    if path in ROUTES:
        return path
    if path.startswith("/v1/responses/"):
        return "/v1/responses/{id}"
    if path.startswith("/admin/"):
        return "/admin"
    for page in ("/dashboard", "/playground"):
        if path == page or path.startswith(page + "/"):
            return page
    return "other"


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
        started = time.perf_counter()
        fields: dict[str, Any] = {}
        tokens = (REQUEST_ID.set(request_id), REQUEST_STARTED.set(started))
        fields_token = REQUEST_FIELDS.set(fields)
        route = route_label(scope["path"])
        seen: dict[str, str] = {"status": "500", "cache": "none", "backend": "", "similarity": ""}

        async def send_with_context(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = request_id
                seen["status"] = str(message["status"])
                seen["cache"] = headers.get("x-cache", "none")
                seen["backend"] = headers.get("x-gateway-backend", "")
                seen["similarity"] = headers.get("x-cache-similarity", "")
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                self._done(route, seen, time.perf_counter() - started, scope, fields)
            await send(message)

        try:
            await self.app(scope, receive, send_with_context)
        finally:
            REQUEST_FIELDS.reset(fields_token)
            REQUEST_STARTED.reset(tokens[1])
            REQUEST_ID.reset(tokens[0])

    def _done(
        self,
        route: str,
        seen: dict[str, str],
        seconds: float,
        scope: Scope,
        fields: dict[str, Any],
    ) -> None:
        self.metrics.requests.labels(route, seen["status"], seen["cache"]).inc()
        model = scope.get("state", {}).get("model", "")
        if route in COMPLETION_ROUTES:
            self.metrics.request_seconds.labels(
                route, seen["cache"], seen["backend"], model
            ).observe(seconds)
        extra: dict[str, Any] = {
            "method": scope["method"],
            "path": scope["path"],
            "status": int(seen["status"]),
            "ms": round(seconds * 1000, 2),
        }
        if route in COMPLETION_ROUTES:
            extra.update(cache=seen["cache"], model=model, backend=seen["backend"] or None)
            if seen["similarity"]:
                extra["similarity"] = float(seen["similarity"])
        extra.update(fields)
        quiet = route in QUIET_ROUTES and int(seen["status"]) < 400
        log.log(
            logging.DEBUG if quiet else logging.INFO,
            "%s %s %s",
            scope["method"],
            scope["path"],
            seen["status"],
            extra=extra,
        )
