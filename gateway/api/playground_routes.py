"""GET /playground: a chat page (local HTML, CSS, JS; no CDN) that asks the gateway's own
/v1/chat/completions and shows, for each answer, where it came from (x-cache, similarity,
engine) and how long it took.

The page itself holds no data and needs no key. Everything it shows comes through the API
(/v1/models, /v1/chat/completions) with the key typed into the page as a Bearer header, so it is
behind exactly the API's auth: with keys configured, no key means a 401 and nothing shown.
"""

from __future__ import annotations

from fastapi import APIRouter

from gateway.api.static_pages import add_page

router = APIRouter(prefix="/playground", include_in_schema=False)
add_page(
    router,
    "playground.html",
    {
        "playground.css": "text/css; charset=utf-8",
        "playground.js": "text/javascript; charset=utf-8",
    },
    "playground",
)
