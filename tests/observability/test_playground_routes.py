"""/playground's files: the page and its assets are served by the gateway (no CDN, nothing
external referenced), need no key, and an unknown asset is a 404."""

from __future__ import annotations

import re

import httpx

from tests.support.cache_http import auth_settings
from tests.support.gateway import running_gateway


def test_the_page_and_its_assets_are_local_and_need_no_key() -> None:
    with running_gateway(auth=auth_settings(), cache={"enabled": False}) as url:
        page = httpx.get(f"{url}/playground")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assets = re.findall(r'(?:src|href)="(/playground/assets/[^"]+)"', page.text)
        assert sorted(assets) == [
            "/playground/assets/playground.css",
            "/playground/assets/playground.js",
        ]
        for path in assets:
            asset = httpx.get(f"{url}{path}")
            assert asset.status_code == 200 and asset.content
            assert not re.search(r"https?://", asset.text), path  # nothing loaded from outside
        assert not re.search(r"(?:src|href)=\"https?://", page.text)
        missing = httpx.get(f"{url}/playground/assets/secrets.txt")
        assert missing.status_code == 404 and "error" in missing.json()
        # The data behind the page is the API's, behind its keys.
        assert httpx.get(f"{url}/v1/models").status_code == 401
