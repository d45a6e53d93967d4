"""Composition root: builds the gateway's parts from Settings and owns their lifetimes."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from fastapi import FastAPI
from threadpoolctl import threadpool_limits

from gateway import __version__
from gateway.api import (
    admin_routes,
    dashboard_routes,
    health_routes,
    messages,
    metrics_routes,
    openai_routes,
    playground_routes,
    responses,
)
from gateway.api.deps import Services
from gateway.api.errors import install_error_handlers
from gateway.api.request_context import RequestContext
from gateway.audit import Auditor
from gateway.auth import Authenticator
from gateway.cache.cluster_stats import ClusterStats
from gateway.cache.factory import build_cache
from gateway.config import Settings
from gateway.observability import Metrics
from gateway.redis_client import shared_redis
from gateway.responses_state import RedisResponseStore, build_response_store
from gateway.routing.admission import Admission
from gateway.routing.backends import BackendPool
from gateway.routing.budget import TokenBudget
from gateway.routing.config import KeyLimit, RateLimitConfig
from gateway.routing.discovery import PublishedEngines
from gateway.routing.dns_discovery import DnsEngines, build_resolver, is_dns
from gateway.routing.redis_limits import SharedLimiter, build_limiter
from gateway.routing.shared_flight import SharedFlights, SharedFlightsCollector
from gateway.routing.upstream import Upstream
from gateway.speculation import Speculation, SpeculationCollector
from gateway.timeseries import Sampler


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics(__version__)
    series = Sampler(metrics)  # per-second history for /dashboard

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # numpy's BLAS threads spin between the cache's small products and starve the event
        # loop and the embedder on a small machine (docs/benchmarks.md): one thread is faster.
        # OpenBLAS keeps this per thread: here it is the event loop's, where the store searches.
        threadpool_limits(1, user_api="blas")
        async with AsyncExitStack() as stack:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
            client = await stack.enter_async_context(httpx.AsyncClient(limits=limits))
            pool = BackendPool(
                [b for b in settings.backends if not is_dns(b.url)],
                client,
                probe_interval_s=settings.probe_interval_s,
                probe_timeout_s=settings.timeouts.probe_s,
                routing=settings.routing,
            )
            pool.add_breaker_listener(metrics.on_breaker)
            await stack.enter_async_context(pool)
            if discovered := [b for b in settings.backends if is_dns(b.url)]:
                resolver = build_resolver(settings.dns_nameserver)
                engines = DnsEngines(pool, discovered, resolver, interval_s=settings.dns_interval_s)
                await stack.enter_async_context(engines)
            if settings.backends_file is not None:
                await stack.enter_async_context(PublishedEngines(pool, settings.backends_file))
            cache = None
            if settings.cache.enabled:
                cache = await stack.enter_async_context(build_cache(settings.cache))
                cache.observer = metrics.cache_hooks
                metrics.watch_embedder(cache.embedder)
            responses_store = build_response_store(
                settings.responses,
                settings.cache.redis_url,
                prefix=settings.cache.key_prefix,
                tls=settings.cache.redis_tls_options(),
            )
            stack.push_async_callback(responses_store.close)
            if isinstance(responses_store, RedisResponseStore):
                await responses_store.ready()
            limiter = build_limiter(
                _rate_limits(settings),
                settings.cache.redis_url,  # the gateway's Redis: limits shared by replicas
                prefix=settings.cache.key_prefix,
                tls=settings.cache.redis_tls_options(),
            )
            stack.push_async_callback(limiter.aclose)
            if isinstance(limiter, SharedLimiter):
                await limiter.ready()
            budget = TokenBudget(settings.routing.budget, pool, client)
            await budget.warm_up(sorted({m for b in settings.backends for m in b.models}))
            upstream = Upstream(pool, settings.timeouts, settings.routing)
            stack.push_async_callback(upstream.aclose)
            admission = Admission(pool.capacity, settings.routing.admission)
            audit = None
            if cache is not None and settings.cache.audit.sample_rate > 0:
                audit = Auditor(cache, upstream, admission, pool, budget, settings.cache.audit)
                metrics.watch_audit(audit)
            shared, cluster_stats = None, None
            if settings.cache.redis_url:  # replicas coordinate through their Redis
                coordination = await stack.enter_async_context(shared_redis(settings))
                prefix = settings.cache.key_prefix
                if settings.routing.shared_flight.enabled:
                    shared = SharedFlights(
                        coordination, settings.routing.shared_flight, prefix=prefix
                    )
                    metrics.registry.register(SharedFlightsCollector(shared))
                if cache is not None:
                    cluster_stats = ClusterStats(
                        coordination,
                        cache.counters,
                        prefix=prefix,
                        flush_s=settings.cache.stats_flush_s,
                    )
                    await stack.enter_async_context(cluster_stats)
            speculation = None
            if cache is not None:
                speculation = Speculation(
                    settings.cache, upstream.balancer, admission, settings.routing.balancer
                )
                metrics.registry.register(SpeculationCollector(speculation))
            services = Services(
                settings=settings,
                pool=pool,
                upstream=upstream,
                cache=cache,
                auth=Authenticator(settings.auth),
                metrics=metrics,
                admission=admission,
                limiter=limiter,
                budget=budget,
                responses=responses_store,
                audit=audit,
                shared=shared,
                cluster_stats=cluster_stats,
                speculation=speculation,
            )
            stack.push_async_callback(services.drain)
            metrics.watch(pool, services.admission)
            app.state.services = services
            app.state.series = await stack.enter_async_context(series)
            # Everything loaded so far (models, tokenizers, half a million objects) lives as long
            # as the process: out of the collector's way, or each full collection walks it all,
            # a pause of ~300 ms on two cores that lands on whichever requests are running.
            gc.collect()
            gc.freeze()
            try:
                yield
            finally:
                gc.unfreeze()  # collectable again at shutdown (extension modules check for leaks)

    app = FastAPI(title="semcache-gateway", version=__version__, lifespan=lifespan)
    install_error_handlers(app)
    for module in (
        openai_routes,
        responses,
        messages,
        admin_routes,
        health_routes,
        metrics_routes,
        dashboard_routes,
        playground_routes,
    ):
        app.include_router(module.router)
    app.add_middleware(RequestContext, metrics=metrics)
    return app


def _rate_limits(settings: Settings) -> RateLimitConfig:
    """The routing limits plus those set on each API key."""
    config = settings.routing.rate_limits
    per_key = {
        key.key_id: KeyLimit(
            requests_per_minute=key.requests_per_minute, tokens_per_minute=key.tokens_per_minute
        )
        for key in settings.auth.keys
        if key.requests_per_minute or key.tokens_per_minute
    }
    return config.model_copy(update={"keys": {**config.keys, **per_key}})
