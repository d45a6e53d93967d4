"""Fixtures of the cache-quality tests: one real embedder per session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.cache import Embedder, EmbedderConfig


@pytest.fixture(scope="session")
async def quality_embedder() -> AsyncIterator[Embedder]:
    async with Embedder(EmbedderConfig(backend="onnx")) as shared:
        yield shared
