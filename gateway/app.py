"""Composition root: builds the gateway's parts from Settings and owns their lifetimes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from fastapi import FastAPI

from gateway import __version__
from gateway.api import admin_routes, health_routes, metrics_routes, openai_routes
from gateway.api.deps import Services
from gateway.api.errors import install_error_handlers
from gateway.auth import Authenticator
from gateway.cache.service import build_cache
from gateway.config import Settings
from gateway.observability import Metrics
from gateway.routing.backends import BackendPool
from gateway.routing.upstream import Upstream


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
            client = await stack.enter_async_context(httpx.AsyncClient(limits=limits))
            pool = await stack.enter_async_context(
                BackendPool(
                    settings.backends,
                    client,
                    probe_interval_s=settings.probe_interval_s,
                    probe_timeout_s=settings.timeouts.probe_s,
                )
            )
            cache = None
            if settings.cache.enabled:
                cache = await stack.enter_async_context(build_cache(settings.cache))
            services = Services(
                settings=settings,
                pool=pool,
                upstream=Upstream(pool, client, settings.timeouts),
                cache=cache,
                auth=Authenticator(settings.auth),
                metrics=Metrics(),
            )
            stack.push_async_callback(services.drain)
            app.state.services = services
            yield

    app = FastAPI(title="semcache-gateway", version=__version__, lifespan=lifespan)
    install_error_handlers(app)
    for module in (openai_routes, admin_routes, health_routes, metrics_routes):
        app.include_router(module.router)
    return app
