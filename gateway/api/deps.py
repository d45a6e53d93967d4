"""The components a request handler needs, built by ``app.py`` and kept on ``app.state``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from gateway.audit import Auditor
from gateway.auth import Authenticator
from gateway.cache.cluster_stats import ClusterStats
from gateway.cache.service import SemanticCache
from gateway.config import Settings
from gateway.observability import Metrics
from gateway.responses_state import MemoryResponseStore, ResponseStore
from gateway.routing.admission import Admission
from gateway.routing.backends import BackendPool
from gateway.routing.budget import TokenBudget
from gateway.routing.coalesce import Coalescer
from gateway.routing.ratelimit import Limiter
from gateway.routing.shared_flight import SharedFlights
from gateway.routing.upstream import Upstream
from gateway.speculation import Speculation

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    pool: BackendPool
    upstream: Upstream
    cache: SemanticCache | None
    auth: Authenticator
    metrics: Metrics
    admission: Admission
    limiter: Limiter
    budget: TokenBudget
    responses: ResponseStore = field(default_factory=MemoryResponseStore)
    audit: Auditor | None = None  # audits of semantic hits (None: no cache or sample_rate 0)
    speculation: Speculation | None = None  # speculative misses (None: no cache)
    streams: Coalescer[bytes] = field(default_factory=Coalescer)
    answers: Coalescer[Any] = field(default_factory=Coalescer)  # JSON bodies
    shared: SharedFlights | None = None  # flights shared across replicas (through Redis)
    cluster_stats: ClusterStats | None = None  # cache counters summed over the replicas
    _background: set[asyncio.Task[None]] = field(default_factory=set)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Runs ``work`` after the response, off its path; errors are logged, never raised."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background work failed", exc_info=task.exception())

    async def drain(self) -> None:
        """Waits for background work (cache inserts, audits, shared flights' releases) at
        shutdown."""
        if self._background:
            await asyncio.wait(self._background, timeout=5)
        if self.shared is not None:
            await self.shared.drain()


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found
