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
    svc = services(request)
    for backend in svc.pool.backends:
        svc.metrics.backend_up.labels(backend.url).set(1 if backend.healthy else 0)
        svc.metrics.in_flight.labels(backend.url).set(backend.in_flight)
    svc.metrics.queue_depth.set(svc.admission.queue_depth)
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
