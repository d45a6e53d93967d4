"""Redis going away mid-test: requests bypass the cache and succeed; the cache comes back."""

from __future__ import annotations

import time
from typing import Any

import pytest

from gateway.config import BackendConfig
from tests.support.cache_http import ask, auth_settings, cache_stats, wait_inserts
from tests.support.gateway import running_gateway

pytestmark = pytest.mark.e2e


def test_redis_outage_bypasses_then_recovers(engine: Any, redis_control: Any) -> None:
    if not redis_control.managed:
        pytest.skip("TEST_REDIS_URL points at a Redis this test may not kill")
    with running_gateway(
        backends=[BackendConfig(url=engine.url)],
        cache={
            "redis_url": redis_control.url,
            "key_prefix": "outage",
            "store_retry_after_s": 0.2,
            "store_timeout_s": 2.0,
        },
        auth=auth_settings(),
    ) as url:
        model = engine.model
        before = cache_stats(url)["inserts"]
        assert ask(url, model, "Can I pay by card?").headers["x-cache"] == "miss"
        wait_inserts(url, before + 1)
        redis_control.kill()
        try:
            down = ask(url, model, "Can I pay by card?")
            assert down.headers["x-cache"] == "bypass"
            assert down.parse().choices[0].message.content
        finally:
            redis_control.start()
        deadline = time.monotonic() + 10
        while ask(url, model, "Is there a monthly fee?").headers["x-cache"] == "bypass":
            assert time.monotonic() < deadline, "the cache never came back"
            time.sleep(0.3)
