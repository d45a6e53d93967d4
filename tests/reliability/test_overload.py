"""Overload: five times the engines' capacity for a minute, then back to normal.

The gateway runs as ``python -m gateway serve`` in its own process (so its RSS can be read from
/proc) in front of a slow stub engine, also a process: two slots of 0.5 s each, i.e. a
capacity of 4 requests/s, and a queue of 4 that waits at most 1 s. Clients arrive at 20/s
(open loop: arrivals do not wait for answers), one in three streaming. Every answer must be a
200 or a 429 with Retry-After; no 5xx, no reset connection; the engine keeps being used at
capacity; the gateway's memory stays flat; afterwards nothing is stuck and latency is normal.

RELIABILITY_OVERLOAD_S shortens or lengthens the minute (CI default: 60).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from gateway.auth import hash_key
from tests.reliability.processes import GatewayHandle, engine_process, gateway_process
from tests.support.cache_http import ADMIN
from tests.support.stub_engines import MODEL

pytestmark = pytest.mark.slow

SERVICE_S = 0.5  # the stub engine's time per request
SLOTS = 2  # max_in_flight of the one engine
QUEUE = 4
MAX_WAIT_S = 1.0
CAPACITY_PER_S = SLOTS / SERVICE_S
OVERLOAD = 5
DURATION_S = float(os.environ.get("RELIABILITY_OVERLOAD_S", "60"))


@dataclass
class Tally:
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # exceptions, broken answers
    retry_after: list[int] = field(default_factory=list)
    ok_latency_s: list[float] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds into the run, bytes)


def _env(engine_url: str) -> dict[str, str]:
    backend = {"url": engine_url, "models": [MODEL], "max_in_flight": SLOTS}
    return {
        "GATEWAY_BACKENDS": json.dumps([backend]),
        "GATEWAY_PROBE_INTERVAL_S": "0.5",
        "GATEWAY_CACHE__ENABLED": "false",  # admission is under test; the soak covers the cache
        "GATEWAY_ROUTING__ADMISSION__QUEUE_SIZE": str(QUEUE),
        "GATEWAY_ROUTING__ADMISSION__MAX_WAIT_S": str(MAX_WAIT_S),
        "GATEWAY_ROUTING__BALANCER__SCRAPE_METRICS": "false",
        "GATEWAY_AUTH__ADMIN_KEY_HASH": hash_key(ADMIN),
    }


async def _one(client: httpx.AsyncClient, i: int, tally: Tally) -> None:
    stream = i % 3 == 0
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"request {i}"}],
        "stream": stream,
    }
    started = time.perf_counter()
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            payload = await r.aread()
    except httpx.HTTPError as exc:
        tally.errors.append(f"{i}: {exc!r}")
        return
    tally.statuses[r.status_code] = tally.statuses.get(r.status_code, 0) + 1
    if r.status_code == 429:
        try:
            tally.retry_after.append(int(r.headers["retry-after"]))
        except (KeyError, ValueError):
            tally.errors.append(f"{i}: 429 without a usable Retry-After: {r.headers}")
    elif r.status_code == 200:
        tally.ok_latency_s.append(time.perf_counter() - started)
        complete = payload.rstrip().endswith(b"data: [DONE]") if stream else b'"stop"' in payload
        if not complete:
            tally.errors.append(f"{i}: incomplete 200: {payload[-200:]!r}")


async def _sample_rss(gateway: GatewayHandle, tally: Tally, stop: asyncio.Event) -> None:
    started = time.monotonic()
    while not stop.is_set():
        tally.rss.append((time.monotonic() - started, gateway.rss_bytes()))
        await asyncio.sleep(0.5)


async def _overload(gateway: GatewayHandle, tally: Tally) -> None:
    rate = CAPACITY_PER_S * OVERLOAD
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30, limits=limits) as client:
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sample_rss(gateway, tally, stop))
        tasks: list[asyncio.Task[None]] = []
        started = time.monotonic()
        for i in range(int(DURATION_S * rate)):
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(_one(client, i, tally)))
        await asyncio.gather(*tasks)
        stop.set()
        await sampler


def _state(url: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/admin/backends", headers={"authorization": f"Bearer {ADMIN}"})
    return dict(r.json())


async def test_five_times_capacity_for_a_minute_gives_only_200s_and_429s() -> None:
    with (
        engine_process(delay_s=SERVICE_S) as engine,
        gateway_process(_env(engine.url)) as gateway,
    ):
        warm = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "warm up"}]},
            timeout=10,
        )
        assert warm.status_code == 200
        tally = Tally()
        await _overload(gateway, tally)

        assert tally.errors == [], tally.errors[:5]
        assert set(tally.statuses) <= {200, 429}, tally.statuses
        assert tally.statuses.get(429, 0) > 0, "5x capacity must be shed"
        assert len(tally.retry_after) == tally.statuses[429]
        assert min(tally.retry_after) >= 1
        # Shedding must not starve the engine: it keeps working near its capacity.
        assert tally.statuses.get(200, 0) >= 0.6 * CAPACITY_PER_S * DURATION_S, tally.statuses
        assert max(tally.ok_latency_s) < MAX_WAIT_S + SERVICE_S + 5  # nothing hung

        # Memory: flat from the first third of the run to the last.
        third = len(tally.rss) // 3
        first = statistics.mean(rss for _, rss in tally.rss[:third])
        last = statistics.mean(rss for _, rss in tally.rss[-third:])
        peak = max(rss for _, rss in tally.rss)
        assert last <= first * 1.10, f"RSS grew: {first / 2**20:.0f} -> {last / 2**20:.0f} MiB"
        assert peak <= first + 64 * 2**20, f"RSS peaked at {peak / 2**20:.0f} MiB"

        # Recovery: nothing stuck, normal latency.
        deadline = time.monotonic() + 5
        while (state := _state(gateway.url))["admission"]["in_flight"] or state["admission"][
            "queue_depth"
        ]:
            assert time.monotonic() < deadline, f"stuck after the overload: {state}"
            await asyncio.sleep(0.1)
        assert all(b["in_flight"] == 0 for b in state["backends"])
        assert all(b["breaker"]["state"] == "closed" for b in state["backends"]), state
        for i in range(5):
            started = time.perf_counter()
            r = httpx.post(
                f"{gateway.url}/v1/chat/completions",
                json={"model": MODEL, "messages": [{"role": "user", "content": f"after {i}"}]},
                timeout=10,
            )
            assert r.status_code == 200
            assert time.perf_counter() - started < SERVICE_S + 1.0
        assert "Traceback" not in gateway.log_text()
        print(
            f"\noverload: {sum(tally.statuses.values())} requests in {DURATION_S:.0f} s, "
            f"statuses {tally.statuses}, RSS first third {first / 2**20:.1f} MiB, "
            f"last third {last / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB, "
            f"p50 admitted latency {statistics.median(tally.ok_latency_s):.2f} s"
        )
