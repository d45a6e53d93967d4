"""Shared helpers for the routing tests: a BackendPool + Upstream over given engine URLs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.config import BackendConfig, TimeoutConfig
from gateway.routing.backends import BackendPool
from gateway.routing.config import RoutingConfig
from gateway.routing.upstream import Upstream
from tests.support.stub_engines import MODEL

CHAT = "/v1/chat/completions"


def chat(text: str = "hi", *, system: str | None = None, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": text})
    return {"model": MODEL, "messages": messages, **extra}


@dataclass
class Routed:
    pool: BackendPool
    upstream: Upstream
    client: httpx.AsyncClient


@asynccontextmanager
async def routed(
    urls: list[str],
    *,
    routing: RoutingConfig | None = None,
    timeouts: TimeoutConfig | None = None,
    probe_interval_s: float = 0.2,
    max_in_flight: int = 64,
    models: list[str] | None = None,
) -> AsyncIterator[Routed]:
    """A probed pool over ``urls`` and an Upstream on it, for the test's lifetime."""
    routing = routing or RoutingConfig()
    configs = [BackendConfig(url=u, max_in_flight=max_in_flight, models=models or []) for u in urls]
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=None)) as client:
        pool = BackendPool(
            configs, client, probe_interval_s=probe_interval_s, probe_timeout_s=1.0, routing=routing
        )
        async with pool, Upstream(pool, timeouts or TimeoutConfig(), routing) as upstream:
            yield Routed(pool, upstream, client)


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def timed(work: Awaitable[Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = await work
    return result, time.perf_counter() - started


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
