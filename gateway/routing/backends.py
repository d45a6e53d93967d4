"""The pool of engines: what each serves, whether it answers, how busy it is.

A background task probes every engine's ``/health`` (and ``/v1/models`` when its models are not
configured) so that routing decisions never wait on a probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Self

import httpx

from gateway.config import BackendConfig
from gateway.errors import ModelNotFound, NoBackendAvailable

log = logging.getLogger(__name__)


@dataclass
class Backend:
    config: BackendConfig
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> model card
    healthy: bool = False
    in_flight: int = 0
    last_error: str | None = None
    last_probe: float = 0.0

    @property
    def url(self) -> str:
        return self.config.url

    def serves(self, model: str) -> bool:
        return model in self.models or model in self.config.models


class BackendPool:
    """Owns the engines' state; ``async with`` runs the probe loop for its lifetime."""

    def __init__(
        self,
        configs: list[BackendConfig],
        client: httpx.AsyncClient,
        *,
        probe_interval_s: float = 5.0,
        probe_timeout_s: float = 2.0,
    ) -> None:
        self.backends = [Backend(c) for c in configs]
        self._client = client
        self._interval = probe_interval_s
        self._timeout = probe_timeout_s
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await self.probe_all()
        self._task = asyncio.create_task(self._probe_loop(), name="backend-probes")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.probe_all()

    async def probe_all(self) -> None:
        await asyncio.gather(*(self.probe(b) for b in self.backends))

    async def probe(self, backend: Backend) -> None:
        try:
            health = await self._client.get(f"{backend.url}/health", timeout=self._timeout)
            health.raise_for_status()
            if not backend.config.models or not backend.models:
                listing = await self._client.get(f"{backend.url}/v1/models", timeout=self._timeout)
                listing.raise_for_status()
                cards = listing.json().get("data", [])
                backend.models = {c["id"]: c for c in cards if isinstance(c, dict) and "id" in c}
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            if backend.healthy:
                log.warning("engine %s failed its probe: %s", backend.url, exc)
            backend.healthy = False
            backend.last_error = f"{type(exc).__name__}: {exc}"
        else:
            if not backend.healthy:
                log.info("engine %s is up, serving %s", backend.url, sorted(backend.models))
            backend.healthy = True
            backend.last_error = None
        backend.last_probe = time.time()

    def check_model(self, model: str) -> None:
        """404 for a model no engine serves; 503 while no engine has told us what it serves."""
        if any(b.serves(model) for b in self.backends):
            return
        if any(b.models or b.config.models for b in self.backends):
            raise ModelNotFound(model)
        raise NoBackendAvailable("No engine is reachable right now.")

    def ready(self) -> bool:
        return any(b.healthy for b in self.backends)

    def candidates(self, model: str) -> list[Backend]:
        """Healthy engines serving ``model``, least busy first."""
        chosen = [b for b in self.backends if b.healthy and b.serves(model)]
        return sorted(chosen, key=lambda b: b.in_flight / b.config.weight)

    def model_cards(self) -> list[dict[str, Any]]:
        cards: dict[str, dict[str, Any]] = {}
        for backend in self.backends:
            for model in backend.config.models:
                cards.setdefault(model, {"id": model, "object": "model", "owned_by": "gateway"})
            for model, card in backend.models.items():
                cards.setdefault(model, card)
        return list(cards.values())
