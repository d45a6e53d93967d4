"""A page of the gateway's own (the dashboard, the playground): its HTML and its assets, served
from gateway/api/static with no CDN and no browser caching (a new gateway version shows at once)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path

from fastapi import APIRouter
from starlette.responses import Response

from gateway.errors import NotFound

STATIC = Path(__file__).parent / "static"
NO_CACHE = {"cache-control": "no-cache"}


@cache
def _asset(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def add_page(router: APIRouter, html: str, assets: Mapping[str, str], what: str) -> None:
    """GET "" serves ``html``; GET /assets/{name} serves one of ``assets`` (name -> media type)."""

    @router.get("")
    async def page() -> Response:
        return Response(_asset(html), media_type="text/html; charset=utf-8", headers=NO_CACHE)

    @router.get("/assets/{name}")
    async def asset(name: str) -> Response:
        if name not in assets:
            raise NotFound(f"No {what} asset '{name}'.")
        return Response(_asset(name), media_type=assets[name], headers=NO_CACHE)
