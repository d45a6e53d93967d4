"""Liveness (/health: the process answers) and readiness (/ready: an engine answers)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.api.deps import services

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    pool = services(request).pool
    engines = [
        {"url": b.url, "healthy": b.healthy, "models": sorted(b.models)} for b in pool.backends
    ]
    status = 200 if pool.ready() else 503
    return JSONResponse({"ready": status == 200, "engines": engines}, status_code=status)
