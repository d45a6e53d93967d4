"""Running the app under uvicorn, in the foreground or from another program."""

from __future__ import annotations

import uvicorn

from gateway.app import create_app
from gateway.config import Settings
from gateway.observability import configure_logging


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    configure_logging(settings.log_level, as_json=settings.log_json)
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # configure_logging owns the handlers
        loop="uvloop",
        http="httptools",
        access_log=False,
        timeout_graceful_shutdown=10,
    )


def uvicorn_server(settings: Settings) -> uvicorn.Server:
    return uvicorn.Server(uvicorn_config(settings))
