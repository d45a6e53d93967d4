"""The components a request handler needs, built by ``app.py`` and kept on ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from gateway.config import Settings
from gateway.routing.backends import BackendPool
from gateway.routing.upstream import Upstream


@dataclass
class Services:
    settings: Settings
    pool: BackendPool
    upstream: Upstream


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found
