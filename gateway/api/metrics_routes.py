"""GET /metrics in Prometheus' text format."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.deps import services

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    registry = services(request).metrics
    registry.refresh()  # gauges mirroring engines, breakers and the queue
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)
