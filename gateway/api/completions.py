"""One completion request, from parsed body to response: cache first, then an engine.

The path is the one in DESIGN.md: cache policy -> lookup (exact, then semantic) -> replay on a
hit; on a miss the engine's answer is relayed and, once complete, stored after the response
(never blocking it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from starlette.background import BackgroundTask
from starlette.responses import JSONResponse, Response, StreamingResponse

from gateway.api import capture, replay, sse
from gateway.api.deps import Services
from gateway.auth import Caller
from gateway.cache.control import InvalidCacheControl, parse_cache_control
from gateway.cache.entry import CachedAnswer, LookupResult
from gateway.cache.policy import CacheQuery, Kind
from gateway.errors import InvalidRequest, NotCached
from gateway.routing.upstream import StreamInterrupted, UpstreamStream

log = logging.getLogger(__name__)

PATHS: dict[Kind, str] = {"chat": "/v1/chat/completions", "completion": "/v1/completions"}


async def complete(
    svc: Services, kind: Kind, body: dict[str, Any], caller: Caller, cache_control: str | None
) -> Response:
    model: str = body["model"]
    stream = bool(body.get("stream"))
    svc.pool.check_model(model)
    try:
        control = parse_cache_control(cache_control, body.get("cache"))
    except InvalidCacheControl as exc:
        raise InvalidRequest(str(exc), param="cache") from exc

    query = svc.cache.query(kind, body, caller.tenant, control) if svc.cache else None
    result = await svc.cache.lookup(query) if svc.cache and query else LookupResult("bypass")
    svc.metrics.cache_lookups.labels(result.status).inc()
    if result.hit and result.answer is not None:
        return _replay(svc, kind, body, result, result.answer)
    if control.only_if_cached:
        raise NotCached("No cached answer for this request (Cache-Control: only-if-cached).")

    headers: dict[str, str] = {"x-cache": result.status}
    upstream_body = {k: v for k, v in body.items() if k != "cache"}
    storable = query if query is not None and query.control.store else None
    if not stream:
        answer_body = await svc.upstream.complete(PATHS[kind], upstream_body, model)
        task = None
        if storable is not None and (answer := capture.from_body(kind, answer_body)):
            task = BackgroundTask(_insert, svc, storable, answer)
        return JSONResponse(answer_body, headers=headers, background=task)

    wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    if storable is not None:  # usage is needed for the tokens-saved count; hidden if not asked
        upstream_body["stream_options"] = {
            **(body.get("stream_options") or {}),
            "include_usage": True,
        }
    opened = await svc.upstream.stream(PATHS[kind], upstream_body, model)
    headers["x-gateway-backend"] = opened.backend.url
    return StreamingResponse(
        _relay(svc, kind, opened, storable, wants_usage),
        media_type="text/event-stream",
        headers={**sse.HEADERS, **headers},
    )


def _replay(
    svc: Services, kind: Kind, body: dict[str, Any], result: LookupResult, answer: CachedAnswer
) -> Response:
    model = body["model"]
    tokens = answer.prompt_tokens + answer.completion_tokens
    svc.metrics.tokens_saved.labels(model).inc(tokens)
    svc.metrics.cost_saved.labels(model).inc(tokens / 1000 * svc.settings.price_per_1k_tokens)
    headers = {
        "x-cache": result.status,
        "x-cache-similarity": f"{result.similarity or 0:.4f}",
        "age": str(int(result.age_s or 0)),
    }
    if not body.get("stream"):
        return JSONResponse(replay.as_json(kind, answer, model), headers=headers)
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    events: Iterator[bytes] = replay.as_events(kind, answer, model, include_usage)
    return StreamingResponse(
        events, media_type="text/event-stream", headers={**sse.HEADERS, **headers}
    )


async def _relay(
    svc: Services,
    kind: Kind,
    stream: UpstreamStream,
    query: CacheQuery | None,
    wants_usage: bool,
) -> AsyncIterator[bytes]:
    """Relays chunk by chunk. If the client goes away this generator is cancelled and the
    upstream response closed, which makes vLLM abort the request; nothing is stored."""
    captured = capture.StreamCapture(kind) if query is not None else None
    try:
        async for data in stream.events():
            if captured is not None and captured.feed(data) and not wants_usage:
                continue  # the usage-only chunk the gateway asked for, not the client
            yield sse.event(data)
    except StreamInterrupted as exc:
        log.warning("stream from %s cut mid-way: %s", stream.backend.url, exc)
        yield sse.error_event(str(exc))
        return
    finally:
        await stream.aclose()
    if captured is not None and query is not None and (answer := captured.answer()):
        svc.spawn(_insert(svc, query, answer))


async def _insert(svc: Services, query: CacheQuery, answer: CachedAnswer) -> None:
    assert svc.cache is not None
    started = time.perf_counter()
    await svc.cache.insert(query, answer)
    svc.metrics.cache_stage_seconds.labels("insert").observe(time.perf_counter() - started)
