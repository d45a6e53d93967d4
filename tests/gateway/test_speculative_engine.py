"""Speculative misses end to end: the real vLLM engine, the real embedder, the in-process store.

A miss through a gateway that speculates is the engine's answer, the same as through one that
does not; a semantic hit withdraws the engine request and vLLM aborts it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from gateway.config import BackendConfig
from tests.observability.helpers import scrape
from tests.support.gateway import running_gateway
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

ASK: dict[str, Any] = {"max_tokens": 32, "temperature": 0, "ignore_eos": True}
SPECULATIVE = "gateway_speculative_requests_total"


def chat(url: str, model: str, question: str, stream: bool) -> tuple[str, str]:
    """(x-cache, the answer's text)."""
    body = {"model": model, "messages": [{"role": "user", "content": question}], "stream": stream}
    response = httpx.post(f"{url}/v1/chat/completions", json={**body, **ASK}, timeout=120)
    assert response.status_code == 200, response.text
    if not stream:
        return response.headers["x-cache"], response.json()["choices"][0]["message"]["content"]
    chunks = [
        json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")
    ]
    text = "".join((c["choices"][0].get("delta") or {}).get("content") or "" for c in chunks)
    return response.headers["x-cache"], text


def engine_value(url: str, name: str, **labels: str) -> float:
    return scrape(url).value(name, **labels)


def test_misses_match_the_sequential_path_and_hits_abort_the_engine_request(
    engine: Any,
) -> None:
    backends = [BackendConfig(url=engine.url)]
    cache: dict[str, Any] = {"store_timeout_s": 5.0, "audit": {"sample_rate": 0}}
    with (
        running_gateway(backends=backends, cache={**cache, "speculative_miss": True}) as on,
        running_gateway(backends=backends, cache={**cache, "speculative_miss": False}) as off,
    ):
        for stream in (False, True):
            question = f"What is the capital of France? ({'streamed' if stream else 'whole'})"
            speculative, sequential = (
                chat(on, engine.model, question, stream),
                chat(off, engine.model, question, stream),
            )
            assert speculative == sequential == ("miss", speculative[1])
            assert speculative[1]
        assert scrape(on).value(SPECULATIVE, outcome="used") == 2
        assert scrape(off).value(SPECULATIVE) == 0

        # The whole answer was stored; paraphrases of it are semantic hits.
        wait_for(lambda: scrape(on).value("gateway_cache_stage_duration_seconds_count") > 0, "")
        stored = chat(on, engine.model, "What is the capital of France? (whole)", False)
        assert stored[0] == "hit-exact"
        generated = engine_value(engine.url, "vllm:generation_tokens_total")
        before = scrape(on)
        for case in (str.upper, str.lower, str.swapcase):
            hit = chat(on, engine.model, case("What is the capital of France? (whole)"), False)
            assert hit == ("hit-semantic", stored[1])
        after = scrape(on)
        assert (
            after.value(SPECULATIVE, outcome="aborted")
            == before.value(SPECULATIVE, outcome="aborted") + 3
        )
        sent = after.value("gateway_speculative_aborted_sent_requests_total") - before.value(
            "gateway_speculative_aborted_sent_requests_total"
        )
        assert sent >= 1, "no speculative request reached the engine before its hit"
        # vLLM aborted each withdrawn request: none ran to its max_tokens (ignore_eos).
        wait_for(lambda: engine_value(engine.url, "vllm:num_requests_running") == 0, "idle")
        time.sleep(0.5)
        extra = engine_value(engine.url, "vllm:generation_tokens_total") - generated
        assert extra < ASK["max_tokens"], f"{extra} tokens generated for {sent} withdrawn requests"
