"""Composition root: builds the gateway's parts from Settings and owns their lifetimes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from fastapi import FastAPI

from gateway import __version__
from gateway.api import health_routes, openai_routes
from gateway.api.deps import Services
from gateway.api.errors import install_error_handlers
from gateway.config import Settings
from gateway.routing.backends import BackendPool
from gateway.routing.upstream import Upstream


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            client = await stack.enter_async_context(
                httpx.AsyncClient(
                    limits=httpx.Limits(max_connections=None, max_keepalive_connections=256)
                )
            )
            pool = await stack.enter_async_context(
                BackendPool(
                    settings.backends,
                    client,
                    probe_interval_s=settings.probe_interval_s,
                    probe_timeout_s=settings.timeouts.probe_s,
                )
            )
            app.state.services = Services(
                settings=settings, pool=pool, upstream=Upstream(pool, client, settings.timeouts)
            )
            yield

    app = FastAPI(title="semcache-gateway", version=__version__, lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(openai_routes.router)
    app.include_router(health_routes.router)
    return app
