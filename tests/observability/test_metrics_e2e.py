"""/metrics after real traffic: the real engine, the real embedder, the in-process store.

Every family the issue asks for must be exported, follow Prometheus' conventions and move
when requests pass: misses, exact and semantic hits, streamed and not.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.config import BackendConfig
from tests.observability.helpers import Scrape, scrape
from tests.support.gateway import running_gateway
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

PRICE = 2.0  # per 1k tokens
ASK: dict[str, Any] = {"max_tokens": 48, "temperature": 0, "stop": [".", "\n"]}
CHAT = "/v1/chat/completions"


def chat(url: str, model: str, question: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": question}], **ASK, **extra}
    response = httpx.post(f"{url}{CHAT}", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response


def inserts(url: str) -> float:
    return scrape(url).value("gateway_cache_stage_duration_seconds_count", stage="insert")


@pytest.fixture(scope="module")
def traffic(engine: Any) -> Iterator[tuple[str, Scrape, Scrape]]:
    """A gateway after a miss, an exact hit, a semantic hit, a streamed miss and a streamed
    hit; yields its URL and the scrapes before and after that traffic."""
    with running_gateway(
        backends=[BackendConfig(url=engine.url)],
        cache={"store_timeout_s": 5.0},
        price_per_1k_tokens=PRICE,
    ) as url:
        before = scrape(url)
        model = engine.model
        assert chat(url, model, "How do I reset my password?").headers["x-cache"] == "miss"
        wait_for(lambda: inserts(url) >= 1, "the first answer to be stored")
        assert chat(url, model, "How do I reset my password?").headers["x-cache"] == "hit-exact"
        paraphrase = chat(url, model, "how do i reset my password")
        assert paraphrase.headers["x-cache"] == "hit-semantic"
        streamed = chat(url, model, "Name a primary colour", stream=True)
        assert streamed.headers["x-cache"] == "miss"
        assert "data: [DONE]" in streamed.text
        wait_for(lambda: inserts(url) >= 2, "the streamed answer to be stored")
        replayed = chat(url, model, "Name a primary colour", stream=True)
        assert replayed.headers["x-cache"] == "hit-exact"
        yield url, before, scrape(url)


def test_requests_by_route_status_and_cache_result(traffic: tuple[str, Scrape, Scrape]) -> None:
    _, before, after = traffic
    name = "gateway_requests_total"
    assert after.families["gateway_requests"] == "counter"
    assert before.value(name, route=CHAT) == 0
    assert after.value(name, route=CHAT, status="200", cache="miss") == 2
    assert after.value(name, route=CHAT, status="200", cache="hit-exact") == 2
    assert after.value(name, route=CHAT, status="200", cache="hit-semantic") == 1
    assert after.value(name, route="/metrics", status="200") >= 1  # bounded route labels


def test_hit_ratio_counters_and_gauge(traffic: tuple[str, Scrape, Scrape]) -> None:
    _, before, after = traffic
    lookups = "gateway_cache_lookups_total"
    for result in ("hit-exact", "hit-semantic", "miss", "bypass"):
        assert before.has(lookups, result=result)  # present at 0 from the start: rate() works
    assert after.value(lookups, result="hit-exact") == 2
    assert after.value(lookups, result="hit-semantic") == 1
    assert after.value(lookups, result="miss") == 2
    assert after.families["gateway_cache_hit_ratio"] == "gauge"
    assert after.value("gateway_cache_hit_ratio") == pytest.approx(3 / 5)


def test_latency_histograms_per_backend_and_model(
    traffic: tuple[str, Scrape, Scrape], engine: Any
) -> None:
    _, _, after = traffic
    at = {"backend": engine.url, "model": engine.model}
    total = "gateway_request_duration_seconds"
    assert after.families[total] == "histogram"
    assert after.value(f"{total}_count", route=CHAT, cache="miss", **at) == 2
    assert after.value(f"{total}_count", route=CHAT, cache="hit-exact", model=engine.model) == 2
    miss_mean = after.value(f"{total}_sum", cache="miss", **at) / 2
    hit_mean = after.value(f"{total}_sum", cache="hit-exact") / 2
    assert 0 < hit_mean < miss_mean  # the point of the cache, visible in the metrics
    assert after.value(f"{total}_bucket", cache="miss", le="+Inf", **at) == 2

    ttft = "gateway_time_to_first_token_seconds"
    assert after.value(f"{ttft}_count", cache="miss", **at) == 1
    assert after.value(f"{ttft}_count", cache="hit-exact", backend="", model=engine.model) == 1
    assert after.value(f"{ttft}_sum", cache="miss", **at) > 0

    tpot = "gateway_time_per_output_token_seconds"
    assert after.families[tpot] == "histogram"
    assert after.value(f"{tpot}_count", **at) == 1
    per_token = after.value(f"{tpot}_sum", **at)
    assert 0 < per_token < after.value(f"{total}_sum", cache="miss", **at)


def test_embedding_and_vector_search_latency(traffic: tuple[str, Scrape, Scrape]) -> None:
    _, _, after = traffic
    stage = "gateway_cache_stage_duration_seconds"
    assert after.value(f"{stage}_count", stage="exact") == 5  # every lookup
    assert after.value(f"{stage}_count", stage="embed") == 3  # lookups past the exact tier
    assert after.value(f"{stage}_count", stage="search") == 3
    assert after.value(f"{stage}_count", stage="insert") == 2
    assert after.value(f"{stage}_sum", stage="embed") > 0
    assert after.value("gateway_embedder_batches_total") >= 1
    assert after.value("gateway_embedder_texts_total") >= 3
    assert after.value("gateway_embedder_model_seconds_total") > 0
    assert after.families["gateway_embedder_texts"] == "counter"


def test_tokens_and_cost_saved(traffic: tuple[str, Scrape, Scrape], engine: Any) -> None:
    _, before, after = traffic
    tokens = after.value("gateway_tokens_saved_total", model=engine.model)
    assert before.value("gateway_tokens_saved_total") == 0
    assert tokens > 3 * 10  # three hits, each with a prompt of ~10+ tokens and an answer
    cost = after.value("gateway_cost_saved_total", model=engine.model)
    assert cost == pytest.approx(tokens / 1000 * PRICE)


def test_engine_health_breaker_and_load_gauges(
    traffic: tuple[str, Scrape, Scrape], engine: Any
) -> None:
    _, _, after = traffic
    assert after.value("gateway_backend_up", backend=engine.url) == 1
    assert after.has("gateway_backend_breaker_state", backend=engine.url)
    assert after.value("gateway_backend_breaker_state", backend=engine.url) == 0  # closed
    assert after.has("gateway_backend_in_flight_requests", backend=engine.url)
    assert after.value("gateway_backend_max_in_flight_requests", backend=engine.url) == 64
    assert after.families["gateway_admission_queue_depth"] == "gauge"
    assert after.value("gateway_build_info", version="0.1.0") == 1


def test_every_name_follows_the_conventions(traffic: tuple[str, Scrape, Scrape]) -> None:
    _, _, after = traffic
    ours = {name: kind for name, kind in after.families.items() if name.startswith("gateway_")}
    assert len(ours) >= 20
    for name, kind in ours.items():
        if kind == "histogram":
            assert name.endswith("_seconds"), name  # base unit in the name
        assert not name.endswith("_total"), name  # the parser strips it from counters


def test_dashboard_data_reflects_the_same_traffic(
    traffic: tuple[str, Scrape, Scrape], engine: Any
) -> None:
    url, _, after = traffic
    time.sleep(1.2)  # one sampler tick after the last request
    data = httpx.get(f"{url}/dashboard/data", params={"window": 60}).json()
    summary = data["summary"]
    assert summary["requests"] >= 5
    assert summary["hits"] == 3 and summary["misses"] == 2
    assert summary["tokens_saved"] == after.value("gateway_tokens_saved_total")
    assert summary["p95"] is not None and summary["p95"] > 0
    assert sum(data["series"]["rps"]) > 0
    [engine_state] = data["engines"]
    assert engine_state["url"] == engine.url and engine_state["healthy"]
    assert engine_state["breaker"] == "closed"
    assert data["backends"][engine.url]["up"][-1] == 1
    assert data["cache"]["store"] == "memory" and data["cache"]["entries"] == 2
    json.dumps(data, allow_nan=False)  # plain JSON for the page
