"""Sending one request to an engine: failover before the first byte, streaming relay after it.

Only failures that happen before the engine answered (connect errors, 502/503/504, a timeout
waiting for headers) are retried on the next candidate: nothing has reached the client yet. Once
a stream has started, a failure ends it; it is never replayed elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.config import TimeoutConfig
from gateway.errors import NoBackendAvailable, UpstreamError, UpstreamTimeout
from gateway.routing.backends import Backend, BackendPool

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({502, 503, 504})


class StreamInterrupted(Exception):
    """The engine's stream broke off after bytes were relayed (closed, stalled or malformed)."""


@dataclass
class UpstreamStream:
    """An engine's SSE stream, opened with status 200. Iterate ``events()``, then ``aclose()``."""

    backend: Backend
    response: httpx.Response
    idle_timeout_s: float
    _closed: bool = False

    async def events(self) -> AsyncIterator[bytes]:
        """Yields each event's data payload (the text after ``data: ``), ``[DONE]`` included."""
        lines = self.response.aiter_lines()
        data: list[str] = []
        while True:
            try:
                async with asyncio.timeout(self.idle_timeout_s):
                    line = await anext(lines)
            except StopAsyncIteration:
                break
            except TimeoutError as exc:
                raise StreamInterrupted(
                    f"engine sent nothing for {self.idle_timeout_s:g} s"
                ) from exc
            except httpx.HTTPError as exc:
                raise StreamInterrupted(f"engine stream failed: {exc}") from exc
            if line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
            elif not line and data:
                yield "\n".join(data).encode()
                data = []
        if data:
            yield "\n".join(data).encode()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self.backend.in_flight -= 1
            await self.response.aclose()


class Upstream:
    """Sends OpenAI requests to the pool's engines."""

    def __init__(self, pool: BackendPool, client: httpx.AsyncClient, timeouts: TimeoutConfig):
        self._pool = pool
        self._client = client
        self._timeouts = timeouts

    async def complete(self, path: str, body: dict[str, Any], model: str) -> dict[str, Any]:
        """A non-streaming request; returns the engine's JSON body."""
        response, backend = await self._send(path, body, model, stream=False)
        try:
            return _json(response)
        finally:
            backend.in_flight -= 1

    async def stream(self, path: str, body: dict[str, Any], model: str) -> UpstreamStream:
        """Opens a streaming request; the caller must ``aclose()`` the result."""
        response, backend = await self._send(path, body, model, stream=True)
        return UpstreamStream(backend, response, self._timeouts.idle_stream_s)

    async def _send(
        self, path: str, body: dict[str, Any], model: str, *, stream: bool
    ) -> tuple[httpx.Response, Backend]:
        candidates = self._pool.candidates(model)
        if not candidates:
            raise NoBackendAvailable(f"No engine serving '{model}' is reachable right now.")
        last: Exception | None = None
        for backend in candidates:
            request = self._client.build_request(
                "POST", f"{backend.url}{path}", json=body, timeout=self._timeout()
            )
            backend.in_flight += 1
            try:
                async with asyncio.timeout(self._timeouts.first_byte_s):
                    response = await self._client.send(request, stream=True)
            except (httpx.TransportError, TimeoutError) as exc:
                backend.in_flight -= 1
                if isinstance(exc, httpx.ConnectError):
                    backend.healthy = False  # the probe loop brings it back
                backend.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("engine %s failed before answering: %r", backend.url, exc)
                last = exc
                continue
            if response.status_code == 200:
                if not stream:
                    await response.aread()
                    await response.aclose()
                return response, backend
            await response.aread()
            await response.aclose()
            backend.in_flight -= 1
            if response.status_code in RETRYABLE_STATUS:
                last = UpstreamError(response.status_code, _json(response))
                continue
            raise UpstreamError(response.status_code, _json(response))
        if isinstance(last, TimeoutError | httpx.TimeoutException):
            raise UpstreamTimeout("The engines did not answer in time.")
        raise NoBackendAvailable(f"No engine serving '{model}' could take the request: {last}")

    def _timeout(self) -> httpx.Timeout:
        t = self._timeouts
        return httpx.Timeout(connect=t.connect_s, read=t.first_byte_s, write=t.connect_s, pool=None)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"message": response.text[:500] or f"engine answered {response.status_code}"}
