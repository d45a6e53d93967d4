"""Fixtures of the cache tests: one real embedder per session, caches over both stores."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from gateway.cache import CacheConfig, Embedder, EmbedderConfig, SemanticCache, build_cache

MakeCache = Callable[..., Awaitable[SemanticCache]]


@pytest.fixture(scope="session")
async def embedder() -> AsyncIterator[Embedder]:
    async with Embedder(EmbedderConfig(backend="onnx")) as shared:
        yield shared


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
async def make_cache(
    store_kind: str, embedder: Embedder, request: pytest.FixtureRequest
) -> AsyncIterator[MakeCache]:
    """Builds started caches on the parametrized store, each under its own Redis key prefix."""
    made: list[SemanticCache] = []

    async def make(**overrides: Any) -> SemanticCache:
        settings: dict[str, Any] = {
            "key_prefix": f"t{uuid.uuid4().hex[:12]}",
            "sweep_interval_s": 3600.0,
            "store_retry_after_s": 0.2,
            "store_timeout_s": 5.0,  # a loaded CI box must not turn behaviour into bypasses
        }
        if store_kind == "redis":
            settings["redis_url"] = request.getfixturevalue("redis_server")
        if store_kind == "redis-cluster":
            settings["redis_url"] = request.getfixturevalue("redis_cluster").url
        settings.update(overrides)
        cache = build_cache(CacheConfig(**settings), embedder=embedder)
        await cache.start()
        made.append(cache)
        return cache

    yield make
    for cache in made:
        with contextlib.suppress(Exception):  # a test may have killed Redis on purpose
            await cache.flush()
        await cache.close()


@pytest.fixture
async def cache(make_cache: MakeCache) -> SemanticCache:
    return await make_cache()
