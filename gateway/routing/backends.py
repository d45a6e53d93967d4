"""The pool of engines: what each serves, whether it answers, how busy it is.

Health has two sources. Active: a background task probes every engine's ``/health`` (and
``/v1/models`` when its models are not configured, and vLLM's ``/metrics`` for its load) so that
routing decisions never wait on a probe. Passive: the outcome of real requests feeds each
engine's circuit breaker (see breaker.py). An engine is routable when its probe passed and its
breaker lets requests through.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Self

import httpx

from gateway.background import stop_task
from gateway.config import BackendConfig
from gateway.errors import ModelNotFound, NoBackendAvailable
from gateway.routing.breaker import BreakerListener, CircuitBreaker
from gateway.routing.config import RoutingConfig
from gateway.routing.engine_metrics import EngineLoad, parse_engine_metrics

log = logging.getLogger(__name__)


@dataclass(eq=False)  # identity: two engines are never "equal"
class Backend:
    config: BackendConfig
    breaker: CircuitBreaker
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> model card
    healthy: bool = False
    in_flight: int = 0
    last_error: str | None = None
    last_probe: float = 0.0
    load: EngineLoad | None = None  # last /metrics scrape, if the engine exports one

    @property
    def url(self) -> str:
        return self.config.url

    @property
    def max_in_flight(self) -> int:
        return self.config.max_in_flight

    def serves(self, model: str) -> bool:
        return model in self.models or model in self.config.models

    def has_room(self) -> bool:
        return self.in_flight < self.config.max_in_flight

    def routable(self) -> bool:
        """Probe passed and the breaker lets a request through (no trial slot reserved)."""
        return self.healthy and self.breaker.can_pass()

    def context_len(self, model: str) -> int | None:
        card = self.models.get(model) or {}
        value = card.get("max_model_len")
        return value if isinstance(value, int) and value > 0 else None

    def snapshot(self) -> dict[str, Any]:
        load = self.load
        return {
            "url": self.url,
            "healthy": self.healthy,
            "models": sorted(set(self.models) | set(self.config.models)),
            "weight": self.config.weight,
            "in_flight": self.in_flight,
            "max_in_flight": self.config.max_in_flight,
            "breaker": self.breaker.snapshot(),
            "last_error": self.last_error,
            "last_probe": self.last_probe,
            "engine_load": None
            if load is None
            else {
                "waiting": load.waiting,
                "running": load.running,
                "kv_cache_usage": load.kv_cache_usage,
                "prefix_cache_hit_ratio": load.prefix_hit_ratio(),
            },
        }


class BackendPool:
    """Owns the engines' state; ``async with`` runs the probe loop for its lifetime."""

    def __init__(
        self,
        configs: list[BackendConfig],
        client: httpx.AsyncClient,
        *,
        probe_interval_s: float = 5.0,
        probe_timeout_s: float = 2.0,
        routing: RoutingConfig | None = None,
    ) -> None:
        self._routing = routing or RoutingConfig()
        self._listeners: list[BreakerListener] = []  # shared by every breaker
        self.backends: list[Backend] = []
        self._client = client
        self._interval = probe_interval_s
        self._timeout = probe_timeout_s
        self._task: asyncio.Task[None] | None = None
        for config in configs:
            self.add_backend(config)

    async def __aenter__(self) -> Self:
        await self.probe_all()
        self._task = asyncio.create_task(self._probe_loop(), name="backend-probes")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await stop_task(self._task)

    # -- membership ------------------------------------------------------------------------

    def add_backend(self, config: BackendConfig) -> Backend:
        """Adds an engine (e.g. one the engine pool just started); probed on the next round."""
        for existing in self.backends:
            if existing.url == config.url:
                return existing
        breaker = CircuitBreaker(config.url, self._routing.breaker, listeners=self._listeners)
        backend = Backend(config, breaker)
        self.backends = [*self.backends, backend]
        return backend

    def remove_backend(self, url: str) -> None:
        """Stops routing to an engine; requests already there finish."""
        self.backends = [b for b in self.backends if b.url != url.rstrip("/")]

    def add_breaker_listener(self, listener: BreakerListener) -> None:
        """Called on every breaker transition of every engine (e.g. to export metrics)."""
        self._listeners.append(listener)

    # -- active health ---------------------------------------------------------------------

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
        except (httpx.HTTPError, ValueError, KeyError, AttributeError) as exc:
            if backend.healthy:
                log.warning("engine %s failed its probe: %s", backend.url, exc)
            backend.healthy = False
            backend.last_error = f"{type(exc).__name__}: {exc}"
        else:
            if not backend.healthy:
                log.info("engine %s is up, serving %s", backend.url, sorted(backend.models))
            backend.healthy = True
            backend.last_error = None
            if self._routing.balancer.scrape_metrics:
                await self._scrape(backend)
        backend.last_probe = time.time()

    async def _scrape(self, backend: Backend) -> None:
        try:
            response = await self._client.get(f"{backend.url}/metrics", timeout=self._timeout)
            response.raise_for_status()
            backend.load = parse_engine_metrics(response.text, at=time.monotonic())
        except (httpx.HTTPError, ValueError) as exc:  # not every engine exports metrics
            log.debug("no metrics from %s: %s", backend.url, exc)
            backend.load = None

    # -- passive health (called by the upstream client) ------------------------------------

    def mark_unreachable(self, backend: Backend, reason: str) -> None:
        """A connect error: stop routing there until the next probe passes."""
        backend.healthy = False
        backend.last_error = reason

    # -- queries ---------------------------------------------------------------------------

    def check_model(self, model: str) -> None:
        """404 for a model no engine serves; 503 while no engine has told us what it serves."""
        if any(b.serves(model) for b in self.backends):
            return
        if any(b.models or b.config.models for b in self.backends):
            raise ModelNotFound(model)
        raise NoBackendAvailable("No engine is reachable right now.")

    def ready(self) -> bool:
        return any(b.healthy for b in self.backends)

    def serving(self, model: str) -> list[Backend]:
        return [b for b in self.backends if b.serves(model)]

    def candidates(self, model: str) -> list[Backend]:
        """Routable engines serving ``model`` (probe passed, breaker not open)."""
        return [b for b in self.backends if b.serves(model) and b.routable()]

    def capacity(self, model: str) -> int:
        """How many requests for ``model`` the routable engines take at once."""
        return sum(b.max_in_flight for b in self.candidates(model))

    def context_len(self, model: str) -> int | None:
        """The model's context length as an engine reported it (vLLM's max_model_len)."""
        lengths = [n for b in self.serving(model) if (n := b.context_len(model))]
        return min(lengths) if lengths else None

    def model_cards(self) -> list[dict[str, Any]]:
        cards: dict[str, dict[str, Any]] = {}
        for backend in self.backends:
            for model in backend.config.models:
                cards.setdefault(model, {"id": model, "object": "model", "owned_by": "gateway"})
            for model, card in backend.models.items():
                cards.setdefault(model, card)
        return list(cards.values())

    def snapshot(self) -> list[dict[str, Any]]:
        """Each engine's state, for /admin/backends."""
        return [b.snapshot() for b in self.backends]
