"""Sending one request to an engine: failover before the first byte, streaming relay after it.

Only failures that happen before the engine answered (connect errors, 502/503/504, a timeout
waiting for headers; for non-streaming requests also a body that broke off, since nothing has
reached the client) are retried, on another routable engine, with exponential backoff, jitter
and an overall deadline (tenacity). Once a stream has started, a failure ends it; it is never
replayed elsewhere. Every outcome feeds the engine's circuit breaker.

Engine requests go through aiohttp (its own pooled session, opened on first use): against a
stub engine it took 1.8 ms of CPU per streamed request where httpx took 4.5 ms, and 1.4 ms less
to the first chunk (docs/benchmarks.md). The pool's probes and /tokenize keep httpx.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from gateway.config import TimeoutConfig
from gateway.errors import GatewayError, UpstreamError, UpstreamTimeout
from gateway.routing.affinity import affinity_key
from gateway.routing.backends import Backend, BackendPool
from gateway.routing.balancer import Balancer, RouteDecision
from gateway.routing.config import RoutingConfig
from gateway.routing.errors import EnginesSaturated, EnginesUnavailable

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({502, 503, 504})
# Request bodies as httpx wrote them: compact, UTF-8, finite numbers only.
_ENCODE = functools.partial(json.dumps, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
# Below uvicorn's (vLLM's) 5 s keep-alive, so that an idle connection is dropped here first.
KEEPALIVE_S = 4.0


class StreamInterrupted(Exception):
    """The engine's stream broke off after bytes were relayed (closed, stalled or malformed)."""


class _BeforeFirstByte(Exception):
    """A failure before anything reached the client: another engine may take the request."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass
class UpstreamStream:
    """An engine's SSE stream, opened with status 200. Iterate ``events()``, then ``aclose()``."""

    route: RouteDecision
    response: aiohttp.ClientResponse
    idle_timeout_s: float
    _closed: bool = field(default=False, init=False)

    @property
    def backend(self) -> Backend:
        return self.route.backend

    async def events(self) -> AsyncIterator[bytes]:
        """Yields each event's data payload (the text after ``data: ``), ``[DONE]`` included."""
        chunks = self.response.content.iter_any()
        pending = b""
        data: list[bytes] = []
        while True:
            try:
                async with asyncio.timeout(self.idle_timeout_s):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            except TimeoutError as exc:
                reason = f"engine sent nothing for {self.idle_timeout_s:g} s"
                self.backend.breaker.record_failure(reason)
                raise StreamInterrupted(reason) from exc
            except aiohttp.ClientError as exc:
                self.backend.breaker.record_failure(f"stream broke: {exc!r}")
                raise StreamInterrupted(f"engine stream failed: {exc}") from exc
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                line = line.removesuffix(b"\r")
                if line.startswith(b"data:"):
                    data.append(line[5:].lstrip(b" "))
                elif not line and data:
                    yield b"\n".join(data)
                    data = []
        if pending.startswith(b"data:"):
            data.append(pending.removesuffix(b"\r")[5:].lstrip(b" "))
        if data:
            yield b"\n".join(data)

    async def aclose(self) -> None:
        """Ends the request: a stream read to its end leaves its connection for the next one;
        one cut short closes it (vLLM then aborts the request)."""
        if not self._closed:
            self._closed = True
            self.backend.in_flight -= 1
            if self.response.content.at_eof():
                self.response.release()
            else:
                self.response.close()


@dataclass(frozen=True)
class UpstreamResponse:
    """A non-streaming answer and where it came from."""

    body: Any
    route: RouteDecision


class Upstream:
    """Sends OpenAI requests to the pool's engines."""

    def __init__(
        self, pool: BackendPool, timeouts: TimeoutConfig, routing: RoutingConfig | None = None
    ) -> None:
        self._pool = pool
        self._session: aiohttp.ClientSession | None = None
        self._timeouts = timeouts
        self._cfg = routing or RoutingConfig()
        self.balancer = Balancer(pool, self._cfg.balancer)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_S)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._timeouts.connect_s),
                trust_env=True,  # HTTP(S)_PROXY / NO_PROXY, as httpx honoured them
                json_serialize=_ENCODE,
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Upstream:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def complete(
        self,
        path: str,
        body: dict[str, Any],
        model: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """A non-streaming request; returns the engine's JSON body."""
        answer: dict[str, Any] = (await self.send(path, body, model, headers=headers)).body
        return answer

    async def send(
        self,
        path: str,
        body: dict[str, Any],
        model: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> UpstreamResponse:
        """A non-streaming request; returns the engine's JSON body and the routing decision."""
        (response, data), route = await self._open(path, body, model, headers, stream=False)
        return UpstreamResponse(_json(response, data), route)

    async def stream(
        self,
        path: str,
        body: dict[str, Any],
        model: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> UpstreamStream:
        """Opens a streaming request; the caller must ``aclose()`` the result."""
        (response, _), route = await self._open(path, body, model, headers, stream=True)
        return UpstreamStream(route, response, self._timeouts.idle_stream_s)

    # -- failover --------------------------------------------------------------------------

    async def _open(
        self,
        path: str,
        body: dict[str, Any],
        model: str,
        headers: Mapping[str, str] | None,
        *,
        stream: bool,
    ) -> tuple[tuple[aiohttp.ClientResponse, bytes], RouteDecision]:
        """The response (its body read, unless it is a stream that opened) and its route."""
        retry = self._cfg.retry
        key = affinity_key(model, body, self._cfg.balancer)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + retry.deadline_s
        tried: list[Backend] = []
        failures: list[Exception] = []
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_BeforeFirstByte),
            stop=stop_after_attempt(retry.max_attempts) | stop_after_delay(retry.deadline_s),
            wait=wait_exponential(multiplier=retry.backoff_initial_s, max=retry.backoff_max_s)
            + wait_random(0, retry.jitter_s),
            before_sleep=_log_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    number = attempt.retry_state.attempt_number
                    route = self.balancer.choose(model, key, exclude=tried, retry=number > 1)
                    if route is None:
                        raise self._nowhere(model, tried, failures)
                    route = RouteDecision(route.backend, route.reason, key, number)
                    tried.append(route.backend)
                    budget = min(self._timeouts.first_byte_s, deadline - loop.time())
                    if budget <= 0:
                        raise UpstreamTimeout("The engines did not answer in time.")
                    try:
                        response = await self._attempt(path, body, route, headers, budget, stream)
                    except _BeforeFirstByte as exc:
                        failures.append(exc.cause)
                        raise
                    return response, route
        except _BeforeFirstByte as exc:
            raise _final_error(exc.cause, model) from exc.cause
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _nowhere(self, model: str, tried: list[Backend], failures: list[Exception]) -> Exception:
        """Why no engine can take the request now (no attempt left to make)."""
        routable = [b for b in self._pool.candidates(model) if b not in tried]
        if routable:  # routable engines exist but each is at its max_in_flight
            return EnginesSaturated(
                f"Every engine serving '{model}' is at capacity.", retry_after_s=1.0
            )
        if failures:  # every engine was tried: the client hears about the last failure
            return _final_error(failures[-1], model)
        waits = [b.breaker.retry_in() for b in self._pool.serving(model) if b.healthy]
        return EnginesUnavailable(
            f"No engine serving '{model}' is reachable right now.",
            retry_after_s=min((w for w in waits if w > 0), default=None),
        )

    async def _attempt(
        self,
        path: str,
        body: dict[str, Any],
        route: RouteDecision,
        headers: Mapping[str, str] | None,
        first_byte_s: float,
        stream: bool,
    ) -> tuple[aiohttp.ClientResponse, bytes]:
        backend = route.backend
        if not backend.breaker.allow():  # cannot happen between choose() and here, but be safe
            raise _BeforeFirstByte(RuntimeError(f"circuit of {backend.url} is open"))
        hint = f"reason={route.reason}; attempt={route.attempt}"
        if route.key:
            hint += f"; key={route.key[:16]}"
        send_headers = {**(headers or {}), self._cfg.balancer.hint_header: hint}
        backend.in_flight += 1
        response: aiohttp.ClientResponse | None = None
        data = b""
        try:
            async with asyncio.timeout(first_byte_s):
                response = await self._client().post(
                    f"{backend.url}{path}", json=body, headers=send_headers
                )
                if not stream or response.status != 200:
                    data = await response.read()  # non-streaming: the whole answer, first
        except (aiohttp.ClientError, TimeoutError) as exc:
            if response is not None:
                response.close()
            backend.in_flight -= 1
            reason = f"{type(exc).__name__}: {exc}"
            backend.breaker.record_failure(reason)
            backend.last_error = reason
            if isinstance(exc, aiohttp.ClientConnectorError):
                self._pool.mark_unreachable(backend, reason)
            log.warning("engine %s failed before answering: %r", backend.url, exc)
            raise _BeforeFirstByte(exc) from exc
        except BaseException:  # cancelled (client gone) or a bug: no verdict on the engine
            backend.in_flight -= 1
            backend.breaker.release()
            if response is not None:
                response.close()
            raise
        if response.status == 200:
            backend.breaker.record_success()
            if not stream:
                backend.in_flight -= 1
                response.release()
            return response, data
        backend.in_flight -= 1
        response.release()
        error = UpstreamError(response.status, _json(response, data))
        if response.status >= 500:
            backend.breaker.record_failure(f"status {response.status}")
        else:  # the engine is fine; the request was not
            backend.breaker.record_success()
        if response.status in RETRYABLE_STATUS:
            raise _BeforeFirstByte(error)
        raise error


def _final_error(cause: Exception, model: str) -> GatewayError:
    if isinstance(cause, GatewayError):
        return cause
    if isinstance(cause, TimeoutError):
        return UpstreamTimeout("The engines did not answer in time.")
    return EnginesUnavailable(f"No engine serving '{model}' could take the request: {cause}")


def _log_retry(state: RetryCallState) -> None:
    outcome = state.outcome
    cause = outcome.exception() if outcome is not None else None
    log.info("retrying on another engine (attempt %d failed: %s)", state.attempt_number, cause)


def _json(response: aiohttp.ClientResponse, data: bytes) -> Any:
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        text = data[:500].decode("utf-8", "replace")
        return {"message": text or f"engine answered {response.status}"}
