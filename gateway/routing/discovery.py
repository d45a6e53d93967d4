"""Keeping the pool in step with the engine list that ``python -m engine pool`` publishes.

Engines the list gains are added (and probed at once); engines it loses stop receiving new
requests, while those already there finish. Statically configured backends are never removed.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Self

from engine.registry import PublishedPool, watch_published
from gateway.background import stop_task
from gateway.config import BackendConfig
from gateway.routing.backends import BackendPool

log = logging.getLogger(__name__)


class PublishedEngines:
    """``async with PublishedEngines(pool, path)`` follows the file for its lifetime."""

    def __init__(self, pool: BackendPool, path: Path, interval_s: float = 1.0) -> None:
        self._pool = pool
        self._path = path
        self._interval = interval_s
        self._static = {b.url for b in pool.backends}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._follow(), name="published-engines")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await stop_task(self._task)

    async def _follow(self) -> None:
        async for published in watch_published(self._path, self._interval):
            await self.apply(published)

    async def apply(self, published: PublishedPool) -> None:
        wanted = {
            b.url.rstrip("/"): BackendConfig(url=b.url, models=b.models) for b in published.backends
        }
        for backend in list(self._pool.backends):
            if backend.url not in wanted and backend.url not in self._static:
                log.info("engine %s left the published list", backend.url)
                self._pool.remove_backend(backend.url)
        known = {b.url for b in self._pool.backends}
        for url, config in wanted.items():
            if url not in known:
                log.info("engine %s joined from the published list", url)
                await self._pool.probe(self._pool.add_backend(config))
