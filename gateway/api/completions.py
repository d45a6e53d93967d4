"""One completion request, from parsed body to response: cache first, then an engine.

The path is the one in DESIGN.md: rate limit -> cache policy -> lookup (exact, then semantic)
-> replay on a hit. On a miss: token budget (clamp max_tokens, reject prompts that cannot fit)
-> coalesce identical cacheable misses (across replicas when they share a Redis) -> admission
(slot or 429) -> router -> relay. A complete answer is stored after the response, never
blocking it, by the flight's leader only.

Speculative miss (gateway/speculation.py): when the exact tier missed and the engine has
headroom, the miss path starts at once and the semantic tier runs beside it; a semantic hit
withdraws the engine request (vLLM aborts it) and is replayed, a miss answers from the engine
request already under way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.background import BackgroundTask
from starlette.responses import JSONResponse, Response, StreamingResponse

from gateway.api import sse
from gateway.api.deps import Services
from gateway.api.formats import WireFormat
from gateway.auth import Caller
from gateway.cache.control import InvalidCacheControl, parse_cache_control
from gateway.cache.entry import CachedAnswer, LookupResult
from gateway.cache.policy import CacheQuery
from gateway.cancellation import raise_if_cancelled
from gateway.errors import InvalidRequest, NotCached
from gateway.observability import REQUEST_STARTED, annotate, prompt_preview
from gateway.routing.budget import Budgeted
from gateway.routing.coalesce import Producer, Subscription
from gateway.routing.shared_flight import BYTES, JSON, REMOTE, Codec, flight_key
from gateway.routing.upstream import StreamInterrupted
from gateway.speculation import Attempt, Speculation

log = logging.getLogger(__name__)
T = TypeVar("T")
# The kinds whose hits the auditor can re-ask (gateway/audit.py reads choices[0]).
AUDITED = ("chat", "completion")

# An answer being stored stays joinable this long after it ends: identical requests that
# arrive before its cache insert lands share it instead of calling an engine again.
INSERT_LINGER_S = 2.0


async def complete(
    svc: Services,
    fmt: WireFormat,
    body: dict[str, Any],
    caller: Caller,
    cache_control: str | None,
    *,
    cacheable: bool = True,
) -> Response:
    """Answers one request of ``fmt``'s route. ``cacheable=False`` keeps the cache out of it
    entirely (a request that carries state: its answer depends on more than its body)."""
    model: str = body["model"]
    svc.pool.check_model(model)
    try:
        control = parse_cache_control(cache_control, body.get("cache"))
    except InvalidCacheControl as exc:
        raise InvalidRequest(str(exc), param="cache") from exc
    await svc.limiter.acquire(caller.key_id)  # one request; its tokens are counted on a miss
    annotate(tenant=caller.tenant, stream=bool(body.get("stream")))
    if svc.settings.log_prompts:
        annotate(prompt=prompt_preview(body))

    cache = svc.cache if cacheable else None
    query = cache.query(fmt.kind, body, caller.tenant, control) if cache else None
    result = await cache.lookup_exact(query) if cache and query else LookupResult("bypass")
    if result is None:  # the exact tier missed: the semantic tier decides
        assert cache is not None and query is not None
        speculation = svc.speculation
        if not control.only_if_cached and speculation and speculation.worth_it(model, body):
            return await _speculate(svc, fmt, body, caller, query, speculation)
        result = await cache.lookup_semantic(query)
    svc.metrics.cache_lookups.labels(result.status).inc()
    if result.guard:
        annotate(cache_guard=result.guard)
    if result.hit and result.answer is not None:
        return _replay(svc, fmt, body, result, result.answer)
    if control.only_if_cached:
        raise NotCached("No cached answer for this request (Cache-Control: only-if-cached).")
    return await _miss(svc, fmt, body, caller, query, _cache_headers(result))


def _replay(
    svc: Services, fmt: WireFormat, body: dict[str, Any], result: LookupResult, answer: CachedAnswer
) -> Response:
    model = body["model"]
    tokens = answer.prompt_tokens + answer.completion_tokens
    svc.metrics.tokens_saved.labels(model).inc(tokens)
    svc.metrics.cost_saved.labels(model).inc(tokens / 1000 * svc.settings.price_per_1k_tokens)
    headers = {
        **_cache_headers(result),
        "x-cache-similarity": f"{result.similarity or 0:.4f}",
        "age": str(int(result.age_s or 0)),
    }
    if svc.audit is not None and fmt.kind in AUDITED and svc.audit.wants(result):
        svc.spawn(_audit(svc, fmt, body, result))  # off the path: a free engine or none
    if not fmt.stream:
        return JSONResponse(fmt.replay_json(answer), headers=headers)
    events = fmt.replay_events(answer)
    return StreamingResponse(
        _first_chunk_timed(svc, events, result.status, model, REQUEST_STARTED.get()),
        media_type="text/event-stream",
        headers={**sse.HEADERS, **headers},
    )


def _cache_headers(result: LookupResult) -> dict[str, str]:
    """x-cache, and x-cache-guard when the guard refused the entry that would have been served."""
    headers: dict[str, str] = {"x-cache": result.status}
    if result.guard:
        headers["x-cache-guard"] = result.guard
    return headers


async def _first_chunk_timed(
    svc: Services, events: Iterator[bytes], cache: str, model: str, started: float | None
) -> AsyncIterator[bytes]:
    """A replayed stream, its time to first token observed when its first chunk goes out.
    Asynchronous so that it runs on the event loop (no worker thread per replayed stream)."""
    for i, event in enumerate(events):
        if i == 0 and started is not None:
            svc.metrics.ttft_seconds.labels(cache, "", model).observe(time.perf_counter() - started)
        yield event


async def _speculate(
    svc: Services,
    fmt: WireFormat,
    body: dict[str, Any],
    caller: Caller,
    query: CacheQuery,
    speculation: Speculation,
) -> Response:
    """The engine request starts now; the semantic tier answers meanwhile. A hit withdraws
    the engine request and is replayed; a miss answers from the request already under way."""
    assert svc.cache is not None
    attempt = Attempt()
    start = asyncio.create_task(_start(svc, fmt, body, caller, query, attempt))
    try:
        # The engine request goes first: the lookup's CPU work would otherwise delay it.
        sent = asyncio.ensure_future(attempt.sending.wait())
        await asyncio.wait({sent, start}, return_when=asyncio.FIRST_COMPLETED)
        sent.cancel()
        result = await svc.cache.lookup_semantic(query)
    except BaseException:  # the client went away
        await _withdraw(svc, caller, start)
        raise
    svc.metrics.cache_lookups.labels(result.status).inc()
    if result.guard:
        annotate(cache_guard=result.guard)
    if result.hit and result.answer is not None:
        start.cancel()  # at once; the clean-up need not delay the hit
        svc.spawn(_withdraw(svc, caller, start))
        speculation.record("aborted", attempt)
        annotate(speculative="aborted")
        return _replay(svc, fmt, body, result, result.answer)
    speculation.record("used", attempt)
    annotate(speculative="used")
    return await _respond(svc, fmt, caller, await start, _cache_headers(result))


async def _withdraw(svc: Services, caller: Caller, start: asyncio.Task[_Started]) -> None:
    """Cancels a speculative miss. Leaving its flight closes the engine request (vLLM aborts
    it) unless an identical request still listens; tokens charged to the key are given back."""
    start.cancel()
    await asyncio.wait({start})
    if start.cancelled() or start.exception() is not None:
        return  # _start gave the tokens back, or never charged them
    started = start.result()  # it finished before the cancel landed
    if started.stream is not None:
        await started.stream.aclose()
    svc.spawn(svc.limiter.settle(caller.key_id, started.budgeted.estimated_tokens, 0))


@dataclass
class _Started:
    """A miss whose engine request is under way: for SSE its open subscription (the first
    event in), for JSON the whole answer and the (closed) subscription that got it."""

    budgeted: Budgeted
    storable: CacheQuery | None
    stream: Subscription[bytes] | None = None
    answered: tuple[Subscription[Any], dict[str, Any]] | None = None  # flight, JSON body


async def _miss(
    svc: Services,
    fmt: WireFormat,
    body: dict[str, Any],
    caller: Caller,
    query: CacheQuery | None,
    headers: dict[str, str],
) -> Response:
    started = await _start(svc, fmt, body, caller, query)
    return await _respond(svc, fmt, caller, started, headers)


async def _start(
    svc: Services,
    fmt: WireFormat,
    body: dict[str, Any],
    caller: Caller,
    query: CacheQuery | None,
    attempt: Attempt | None = None,
) -> _Started:
    """Token budget and limit, then the engine request (or an identical one's flight)."""
    model, path = fmt.model, fmt.path
    budgeted = await svc.budget.apply(
        path, body, model, counted=fmt.count_body(body), limit_fields=fmt.limit_fields
    )
    await svc.limiter.acquire(caller.key_id, budgeted.estimated_tokens, requests=0)
    if attempt is not None:
        attempt.prompt_tokens = budgeted.prompt_tokens
    storable = query if query is not None and query.control.store else None
    upstream_body = fmt.upstream_body(budgeted.body, storable is not None)
    # Identical cacheable misses share one engine call; anything else gets a flight of its own,
    # as does a `no-cache` request (it asks for a fresh answer, not a just-finished one). The
    # scope is in the key: only the leader stores, so a follower from another namespace (or
    # with other cache options) would leave its own scope without the answer.
    key: Hashable = (
        (caller.tenant, query.scope, path, json.dumps(upstream_body, sort_keys=True))
        if query is not None and query.control.lookup
        else object()
    )

    def sending() -> None:
        if attempt is not None:
            attempt.mark_sent()

    try:
        raise_if_cancelled()  # withdrawn while the limiter's Redis answered: gateway/cancellation
        if not fmt.stream:

            async def answer(meta: dict[str, Any]) -> AsyncIterator[Any]:
                async with svc.admission.slot(model):
                    sending()
                    response = await svc.upstream.send(path, upstream_body, model)
                meta["backend"] = response.route.backend.url
                yield response.body

            def keepable(bodies: list[Any]) -> bool:
                found = fmt.from_body(bodies[0]) if storable and svc.cache else None
                return bool(found and svc.cache and svc.cache.keeps(found))

            producer = _shared(svc, key, answer, JSON, keepable)
            async with svc.answers.join(key, producer) as flight:
                answered = await anext(aiter(flight))
            return _Started(budgeted, storable, answered=(flight, answered))

        async def events(meta: dict[str, Any]) -> AsyncIterator[bytes]:
            async with svc.admission.slot(model):
                sending()
                opened = await svc.upstream.stream(path, upstream_body, model)
                meta["backend"] = opened.backend.url
                try:
                    async for data in opened.events():
                        yield data
                finally:
                    await opened.aclose()

        def stream_keepable(chunks: list[bytes]) -> bool:
            if storable is None or svc.cache is None:
                return False
            captured = fmt.stream_capture()
            for data in chunks:
                captured.feed(data)
            found = captured.answer()
            return bool(found and svc.cache.keeps(found))

        sub = svc.streams.join(key, _shared(svc, key, events, BYTES, stream_keepable))
        try:
            await sub.wait_started()  # an error before the first byte still gets its HTTP status
        except BaseException:
            await sub.aclose()
            raise
        return _Started(budgeted, storable, stream=sub)
    except asyncio.CancelledError:
        if attempt is not None:  # withdrawn: the tokens were never spent on an answer
            svc.spawn(svc.limiter.settle(caller.key_id, budgeted.estimated_tokens, 0))
        raise


async def _respond(
    svc: Services, fmt: WireFormat, caller: Caller, started: _Started, headers: dict[str, str]
) -> Response:
    """The started miss as the client's response; the answer is stored after it."""
    budgeted, storable = started.budgeted, started.storable
    if started.answered is not None:
        flight, body = started.answered
        leads = flight.is_leader and not flight.meta.get(REMOTE)
        headers["x-gateway-backend"] = str(flight.meta.get("backend", ""))
        if not leads:
            headers["x-gateway-coalesced"] = "1"
        usage = body.get("usage") or {}
        await svc.limiter.settle(caller.key_id, budgeted.estimated_tokens, _tokens(usage))
        task = None
        found = fmt.from_body(body) if leads and storable else None
        if storable and found and svc.cache and svc.cache.keeps(found):
            svc.answers.linger(flight.flight, INSERT_LINGER_S)
            task = BackgroundTask(_insert, svc, storable, found)
        return JSONResponse(fmt.relay_json(body), headers=headers, background=task)

    sub = started.stream
    assert sub is not None
    leads = sub.is_leader and not sub.meta.get(REMOTE)
    headers["x-gateway-backend"] = str(sub.meta.get("backend", ""))
    if not leads:
        headers["x-gateway-coalesced"] = "1"
    relay = _relay(svc, fmt, sub, storable if leads else None)
    return StreamingResponse(
        relay, media_type="text/event-stream", headers={**sse.HEADERS, **headers}
    )


async def _relay(
    svc: Services, fmt: WireFormat, sub: Subscription[bytes], query: CacheQuery | None
) -> AsyncIterator[bytes]:
    """Relays chunk by chunk. A client that goes away cancels this generator; when no one else
    listens to the flight, the engine request is closed too (vLLM then aborts it)."""
    model = fmt.model
    captured = fmt.stream_capture()
    started = REQUEST_STARTED.get() or time.perf_counter()
    backend = str(sub.meta.get("backend", ""))
    leads = sub.is_leader and not sub.meta.get(REMOTE)
    first = last = 0.0
    chunks = tokens = 0  # content chunks; completion tokens from the usage chunk, if any
    try:
        async for data in sub:
            usage_only = captured.feed(data)
            is_last = fmt.is_last(data)
            if fmt.is_content(data, usage_only):
                last = time.perf_counter()
                chunks += 1
                if chunks == 1:
                    first = last
                    svc.metrics.ttft_seconds.labels("miss", backend, model).observe(first - started)
            tokens = fmt.output_tokens(data, usage_only) or tokens
            if is_last and leads and (tokens or chunks) > 1:
                # A coalesced follower replays buffered chunks at once: only the leader's count.
                per_token = (last - first) / ((tokens or chunks) - 1)
                svc.metrics.tpot_seconds.labels(backend, model).observe(per_token)
            if fmt.hidden(data, usage_only):
                continue  # e.g. the usage chunk the gateway asked for, not the client
            answer = captured.answer() if is_last and query is not None else None
            if query is not None and answer and svc.cache and svc.cache.keeps(answer):
                # Before the last yield: a client that hangs up on the end cancels us there.
                svc.streams.linger(sub.flight, INSERT_LINGER_S)
                svc.spawn(_insert(svc, query, answer))
            yield fmt.relay_event(data)
    except StreamInterrupted as exc:
        log.warning("stream from %s cut mid-way: %s", sub.meta.get("backend"), exc)
        yield fmt.error_event(str(exc))
    finally:
        await sub.aclose()


def _shared(
    svc: Services, key: Hashable, producer: Producer[T], codec: Codec[T], keepable: Any
) -> Producer[T]:
    """The flight's producer, led or followed across replicas when they share a Redis."""
    if svc.shared is None or not isinstance(key, tuple):
        return producer
    return svc.shared.wrap(flight_key(list(key)), producer, codec, keepable)


def _tokens(usage: dict[str, Any]) -> int:
    return int(usage.get("total_tokens") or 0)


async def _audit(
    svc: Services, fmt: WireFormat, body: dict[str, Any], result: LookupResult
) -> None:
    assert svc.audit is not None and (fmt.kind == "chat" or fmt.kind == "completion")
    await svc.audit.run(fmt.kind, fmt.path, body, result)


async def _insert(svc: Services, query: CacheQuery, answer: CachedAnswer) -> None:
    assert svc.cache is not None
    started = time.perf_counter()
    await svc.cache.insert(query, answer)
    svc.metrics.cache_stage_seconds.labels("insert").observe(time.perf_counter() - started)
