"""GET /playground: a chat page (local HTML, CSS, JS; no CDN) that asks the gateway's own
/v1/chat/completions and shows, for each answer, where it came from (x-cache, similarity,
engine) and how long it took.

The page itself holds no data and needs no key. Everything it shows comes through the API
(/v1/models, /v1/chat/completions) with the key typed into the page as a Bearer header, so it is
behind exactly the API's auth: with keys configured, no key means a 401 and nothing shown.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from starlette.responses import Response

from gateway.errors import NotFound

router = APIRouter(prefix="/playground", include_in_schema=False)

STATIC = Path(__file__).parent / "static"
ASSETS = {
    "playground.css": "text/css; charset=utf-8",
    "playground.js": "text/javascript; charset=utf-8",
}


@cache
def _asset(name: str) -> bytes:
    return (STATIC / name).read_bytes()


@router.get("")
async def page() -> Response:
    return Response(
        _asset("playground.html"),
        media_type="text/html; charset=utf-8",
        headers={"cache-control": "no-cache"},
    )


@router.get("/assets/{name}")
async def asset(name: str) -> Response:
    if name not in ASSETS:
        raise NotFound(f"No playground asset '{name}'.")
    return Response(_asset(name), media_type=ASSETS[name], headers={"cache-control": "no-cache"})
