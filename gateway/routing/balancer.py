"""Choosing the engine for one request, and saying why.

affinity      the request's prefix key went to its rendezvous-preferred engine among the
              routable ones (a removed or open engine's keys go to their next choice)
spill         the preferred engine carried more than its bounded share of the load
              (``load_bound``): the key went to the next engine in its rendezvous order that
              did not, so a spilled conversation always lands on the same second choice
least-loaded  the request had no affinity key (or the strategy is least_loaded)
fallback      the preferred engine was overloaded, or this is a retry after a failure:
              the least-loaded engine with room took it
round-robin   benchmark baseline only (strategy round_robin)

Never an engine whose in-flight count reached its max_in_flight; ``None`` when none has room.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from gateway.routing.affinity import rendezvous_rank
from gateway.routing.backends import Backend, BackendPool
from gateway.routing.config import BalancerConfig
from gateway.routing.engine_metrics import EngineLoad

Reason = Literal["affinity", "spill", "least-loaded", "fallback", "round-robin"]


@dataclass(frozen=True)
class RouteDecision:
    backend: Backend
    reason: Reason
    key: str | None = None  # the affinity key, if the request had one
    attempt: int = 1

    def header_value(self) -> str:
        """For ``x-gateway-backend``-style headers: ``<url>; reason=<why>``."""
        return f"{self.backend.url}; reason={self.reason}"


class Balancer:
    def __init__(self, pool: BackendPool, config: BalancerConfig | None = None) -> None:
        self._pool = pool
        self._cfg = config or BalancerConfig()
        self._rr = itertools.count()

    def load(self, backend: Backend) -> float:
        """Relative busyness, lower is better: gateway in-flight share plus vLLM's queue and
        KV-cache usage when a fresh scrape exists, divided by the engine's weight."""
        score = backend.in_flight / backend.max_in_flight
        load = backend.load
        if load is not None and time.monotonic() - load.at <= self._cfg.metrics_max_age_s:
            score += (load.waiting or 0.0) / backend.max_in_flight
            score += 0.5 * (load.kv_cache_usage or 0.0)
        return score / backend.config.weight

    def overloaded(self, backend: Backend) -> bool:
        if backend.in_flight >= self._cfg.overload_in_flight_ratio * backend.max_in_flight:
            return True
        load = self._fresh_load(backend)
        if load is None:
            return False
        return (load.waiting or 0.0) >= self._cfg.overload_waiting or (
            load.kv_cache_usage or 0.0
        ) >= self._cfg.overload_kv_cache

    def headroom(self, model: str, key: str | None, max_load: float) -> bool:
        """Whether the engine this request would go to now is lightly loaded: it runs fewer
        than ``max_load`` of its max_in_flight requests for this gateway and, by a fresh
        scrape, vLLM has no request waiting. Extra work sent there (e.g. a speculative
        request that may be aborted) then takes no capacity another request needs."""
        route = self.choose(model, key)
        if route is None:
            return False
        backend = route.backend
        if backend.in_flight >= max_load * backend.max_in_flight:
            return False
        load = self._fresh_load(backend)
        return load is None or not load.waiting

    def queue_load(self, backend: Backend) -> float:
        """Requests at the engine: this gateway's in flight plus vLLM's waiting queue by a
        fresh scrape (other clients' requests show up there too)."""
        load = self._fresh_load(backend)
        return backend.in_flight + ((load.waiting or 0.0) if load is not None else 0.0)

    def within_bound(self, backend: Backend, routable: list[Backend]) -> bool:
        """Consistent hashing with bounded loads (Mirrokni et al.): with the new request
        counted, an engine may carry at most ceil(load_bound x its weighted share of the total
        load), and never has to give keys away below ``load_bound_floor``. Keys move only as
        far as the next engine in their rendezvous order, so they still gather somewhere."""
        bound = self._cfg.load_bound
        own = self.queue_load(backend)
        if bound is None or own < self._cfg.load_bound_floor:
            return True
        total = sum(self.queue_load(b) for b in routable) + 1.0
        weights = sum(b.config.weight for b in routable) or 1.0
        return own + 1.0 <= math.ceil(bound * total * backend.config.weight / weights)

    def _fresh_load(self, backend: Backend) -> EngineLoad | None:
        load = backend.load
        if load is None or time.monotonic() - load.at > self._cfg.metrics_max_age_s:
            return None
        return load

    def choose(
        self,
        model: str,
        key: str | None,
        *,
        exclude: Collection[Backend] = (),
        retry: bool = False,
    ) -> RouteDecision | None:
        """The engine for a request (no side effects: the caller reserves it)."""
        routable = [b for b in self._pool.candidates(model) if b not in exclude]
        usable = [b for b in routable if b.has_room()]
        if not usable:
            return None
        strategy = self._cfg.strategy
        if strategy == "round_robin":
            chosen = usable[next(self._rr) % len(usable)]
            return RouteDecision(chosen, "fallback" if retry else "round-robin", key)
        if strategy == "affinity" and key is not None and not retry:
            by_url = {b.url: b for b in routable}
            ranked = rendezvous_rank(key, [(u, b.config.weight) for u, b in by_url.items()])
            preferred = by_url[ranked[0]]
            if self._cfg.load_bound is None:
                if preferred.has_room() and not self.overloaded(preferred):
                    return RouteDecision(preferred, "affinity", key)
                return RouteDecision(self._least_loaded(usable), "fallback", key)
            for rank, url in enumerate(ranked):
                backend = by_url[url]
                fits = backend.has_room() and not self.overloaded(backend)
                if fits and self.within_bound(backend, routable):
                    return RouteDecision(backend, "spill" if rank else "affinity", key)
            return RouteDecision(self._least_loaded(usable), "fallback", key)
        reason: Reason = "fallback" if retry else "least-loaded"
        return RouteDecision(self._least_loaded(usable), reason, key)

    def _least_loaded(self, backends: list[Backend]) -> Backend:
        return min(backends, key=self.load)
