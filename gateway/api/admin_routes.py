"""The admin API (its own key): cache warm-up, stats and deletion; engine state."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request

from gateway.api.deps import Services, services
from gateway.api.schemas import read_json, validate_model
from gateway.auth import DEFAULT_TENANT
from gateway.cache.service import SemanticCache
from gateway.errors import InvalidRequest, NotFound

router = APIRouter(prefix="/admin")


class WarmRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1)
    entries: list[dict[str, Any]] = Field(min_length=1, max_length=100_000)
    tenant: str = Field(default=DEFAULT_TENANT, min_length=1)
    namespace: str = "default"
    params: dict[str, Any] | None = None
    ttl: float | None = Field(default=None, gt=0)


def _admin(request: Request) -> Services:
    svc = services(request)
    svc.auth.admin(request.headers.get("authorization"))
    return svc


def _cache(svc: Services) -> SemanticCache:
    if svc.cache is None:
        raise NotFound("The cache is disabled (cache.enabled = false).")
    return svc.cache


@router.post("/cache/warm")
async def warm(request: Request) -> dict[str, Any]:
    svc = _admin(request)
    body = validate_model(WarmRequest, await read_json(request, svc.settings.limits.max_warm_bytes))
    try:
        stored = await _cache(svc).warm(
            body.model,
            body.entries,
            body.tenant,
            body.namespace,
            params=body.params,
            ttl_s=body.ttl,
        )
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="entries") from exc
    return {"stored": stored}


@router.get("/cache/stats")
async def stats(request: Request) -> dict[str, Any]:
    svc = _admin(request)
    stats = await _cache(svc).stats()
    if svc.cluster_stats is not None:  # counters of every replica; "replica": this one's
        stats = await svc.cluster_stats.merged(stats)
    if svc.shared is not None:
        stats["shared_flights"] = svc.shared.stats()  # this replica's
    stats["audit"] = svc.audit.stats() if svc.audit is not None else {"sample_rate": 0.0}
    return stats


@router.delete("/cache/entries/{entry_id}")
async def delete_entry(request: Request, entry_id: str) -> dict[str, Any]:
    if not await _cache(_admin(request)).delete(entry_id):
        raise NotFound(f"No cache entry '{entry_id}'.")
    return {"deleted": 1}


@router.delete("/cache/namespaces/{namespace}")
async def delete_namespace(request: Request, namespace: str) -> dict[str, Any]:
    return {"deleted": await _cache(_admin(request)).delete_namespace(namespace)}


@router.delete("/cache")
async def flush(request: Request) -> dict[str, Any]:
    return {"deleted": await _cache(_admin(request)).flush()}


@router.get("/backends")
async def backends(request: Request) -> dict[str, Any]:
    svc = _admin(request)
    return {"backends": svc.pool.snapshot(), "admission": svc.admission.stats()}
