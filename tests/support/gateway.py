"""Fixtures that run the real gateway app under uvicorn."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from gateway.config import BackendConfig, Settings
from gateway.server import uvicorn_server
from tests.support.servers import free_port, serve_in_thread


@contextmanager
def running_gateway(**settings: Any) -> Iterator[str]:
    """A gateway on a free port; yields its base URL (without /v1)."""
    settings.setdefault("probe_interval_s", 0.5)
    config = Settings(host="127.0.0.1", port=free_port(), log_level="warning", **settings)
    with serve_in_thread(uvicorn_server(config)) as url:
        yield url


@pytest.fixture(scope="session")
def gateway(engine: Any) -> Iterator[str]:
    """The gateway in front of the session's real engine."""
    with running_gateway(backends=[BackendConfig(url=engine.url)]) as url:
        yield url
