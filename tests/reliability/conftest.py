"""Fixtures of the reliability suite: a shared real embedder and the ``slow`` marker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.cache import Embedder, EmbedderConfig


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a long, bounded fault test (overload, soak-like)")


@pytest.fixture(scope="session")
async def shared_embedder() -> AsyncIterator[Embedder]:
    """The real all-MiniLM-L6-v2 (ONNX), started once for the cache-level tests here."""
    async with Embedder(EmbedderConfig(backend="onnx")) as embedder:
        yield embedder
