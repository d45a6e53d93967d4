"""GET /dashboard: a live page (local HTML, CSS, JS; no CDN) over /dashboard/data, a JSON time
series of the last minutes (see timeseries.Sampler) plus the engines' and the cache's state.

Like /metrics it needs no key: it shows aggregates, engine URLs and states, never prompts.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway import __version__
from gateway.api.deps import Services, services
from gateway.api.static_pages import add_page
from gateway.timeseries import Sampler

router = APIRouter(prefix="/dashboard", include_in_schema=False)

CACHE_STATS_TTL_S = 5.0  # counting entries costs the store a scan: not on every poll
add_page(
    router,
    "index.html",
    {
        "dashboard.css": "text/css; charset=utf-8",
        "dashboard.js": "text/javascript; charset=utf-8",
        "charts.js": "text/javascript; charset=utf-8",
    },
    "dashboard",
)


@router.get("/data")
async def data(request: Request, window: float = Query(300, ge=10, le=3600)) -> JSONResponse:
    svc = services(request)
    series: Sampler = request.app.state.series
    body: dict[str, Any] = {
        "now": time.time(),
        "version": __version__,
        "price_per_1k_tokens": svc.settings.price_per_1k_tokens,
        "engines": [_engine(b) for b in svc.pool.snapshot()],
        "cache": await _cache_summary(request, svc),
        "audit": svc.audit.stats() if svc.audit is not None else None,
        **series.data(window),
    }
    return JSONResponse(body, headers={"cache-control": "no-store"})


def _engine(snapshot: dict[str, Any]) -> dict[str, Any]:
    keep = ("url", "healthy", "models", "in_flight", "max_in_flight", "last_error", "engine_load")
    engine = {key: snapshot.get(key) for key in keep}
    breaker = snapshot.get("breaker") or {}
    engine["breaker"] = breaker.get("state", "closed")
    engine["breaker_retry_in_s"] = breaker.get("retry_in_s", 0.0)
    engine["breaker_error_ratio"] = breaker.get("window_error_ratio", 0.0)
    return engine


async def _cache_summary(request: Request, svc: Services) -> dict[str, Any]:
    if svc.cache is None:
        return {"enabled": False}
    memo: tuple[float, dict[str, Any]] | None = getattr(request.app.state, "cache_stats", None)
    if memo is None or time.monotonic() - memo[0] > CACHE_STATS_TTL_S:
        stats = await svc.cache.stats()
        if svc.cluster_stats is not None:
            stats = await svc.cluster_stats.merged(stats)
        embedder = stats.get("embedder") or {}
        summary = {
            "enabled": True,
            "store": stats.get("store"),
            "store_available": stats.get("store_available"),
            "entries": stats.get("entries"),
            "store_errors": stats.get("store_errors"),
            "embed_ms": round(float(embedder.get("mean_model_ms", 0.0)), 2),
            "embed_batch": round(float(embedder.get("mean_batch", 0.0)), 2),
            # the cluster's when replicas share a Redis ("counted_by"), else this replica's
            "counted_by": stats.get("counted_by", "replica"),
            "replicas_reporting": stats.get("replicas_reporting", 1),
            "hits": stats.get("hits"),
            "misses": stats.get("misses"),
            "hit_ratio": stats.get("hit_ratio"),
            "tokens_saved": stats.get("tokens_saved"),
        }
        memo = (time.monotonic(), summary)
        request.app.state.cache_stats = memo
    return memo[1]
