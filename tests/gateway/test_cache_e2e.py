"""The semantic cache through HTTP: the official client, the real engine, real Redis 8 or the
in-process store, the real embedder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from gateway.config import BackendConfig
from tests.support.cache_http import (
    ADMIN,
    ASK,
    KEYS,
    ask,
    auth_settings,
    cache_stats,
    client_for,
    wait_inserts,
)
from tests.support.gateway import running_gateway

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["memory", "redis"])
def cached_gateway(request: pytest.FixtureRequest, engine: Any) -> Iterator[str]:
    cache: dict[str, Any] = {"store_timeout_s": 5.0}  # a busy CI box must not cause bypasses
    if request.param == "redis":
        cache["redis_url"] = request.getfixturevalue("redis_server")
        cache["key_prefix"] = f"e2e{int(time.time() * 1000)}"
    with running_gateway(
        backends=[BackendConfig(url=engine.url)], cache=cache, auth=auth_settings()
    ) as url:
        yield url


def test_miss_then_exact_then_semantic_hit(cached_gateway: str, engine: Any) -> None:
    url, model = cached_gateway, engine.model
    before = cache_stats(url)["inserts"]
    first = ask(url, model, "How do I reset my password?")
    assert first.headers["x-cache"] == "miss"
    answer = first.parse().choices[0].message.content
    assert first.parse().choices[0].finish_reason == "stop"
    wait_inserts(url, before + 1)

    exact = ask(url, model, "How do I reset my password?")
    assert exact.headers["x-cache"] == "hit-exact"
    assert exact.parse().choices[0].message.content == answer
    assert float(exact.headers["x-cache-similarity"]) == 1.0
    assert int(exact.headers["age"]) >= 0

    paraphrase = ask(url, model, "how do i reset my password")
    assert paraphrase.headers["x-cache"] == "hit-semantic"
    assert float(paraphrase.headers["x-cache-similarity"]) >= 0.95
    assert paraphrase.parse().choices[0].message.content == answer

    other = ask(url, model, "How do I change my email?")
    assert other.headers["x-cache"] == "miss"


def test_an_answer_cut_at_max_tokens_is_served_again(cached_gateway: str, engine: Any) -> None:
    """The default model runs most answers to max_tokens: the same request gets the same cut
    answer, so it is stored (finish_reason "length") and repeats and paraphrases are hits."""
    url, model = cached_gateway, engine.model
    cut: dict[str, Any] = {"max_tokens": 12, "temperature": 0, "stop": None}
    question = "Explain in detail how I can order a replacement bank card."
    before = cache_stats(url)["inserts"]
    first = ask(url, model, question, **cut)
    assert first.headers["x-cache"] == "miss"
    assert first.parse().choices[0].finish_reason == "length"
    answer = first.parse().choices[0].message.content
    wait_inserts(url, before + 1)

    again = ask(url, model, question, **cut)
    assert again.headers["x-cache"] == "hit-exact"
    assert again.parse().choices[0].message.content == answer
    assert again.parse().choices[0].finish_reason == "length"  # replayed as it was: cut

    reworded = ask(url, model, "Explain in detail how can I order a replacement bank card?", **cut)
    assert reworded.headers["x-cache"] == "hit-semantic"
    assert reworded.parse().choices[0].message.content == answer
    # Another budget is another request: the engine answers it.
    assert ask(url, model, question, **{**cut, "max_tokens": 13}).headers["x-cache"] == "miss"


def test_the_opposite_question_goes_to_the_engine(cached_gateway: str, engine: Any) -> None:
    url, model = cached_gateway, engine.model
    before = cache_stats(url)
    stored = ask(url, model, "Is contactless payment enabled on my card?")
    assert stored.headers["x-cache"] == "miss"
    wait_inserts(url, before["inserts"] + 1)
    opposite = ask(url, model, "Is contactless payment disabled on my card?")  # cosine 0.958
    assert opposite.headers["x-cache"] == "miss"
    assert opposite.headers["x-cache-guard"] == "opposite"
    refusals = cache_stats(url)["guard_refusals"]
    assert refusals.get("opposite", 0) == before["guard_refusals"].get("opposite", 0) + 1
    metrics = httpx.get(f"{url}/metrics").text
    line = next(x for x in metrics.splitlines() if 'guard_refusals_total{reason="opposite"}' in x)
    assert float(line.split()[-1]) >= 1


def test_streamed_miss_is_stored_and_replayed_as_a_stream(cached_gateway: str, engine: Any) -> None:
    url, model = cached_gateway, engine.model
    client = client_for(url)
    messages: Any = [{"role": "user", "content": "Name a primary colour"}]
    before = cache_stats(url)["inserts"]
    with client.chat.completions.with_streaming_response.create(
        model=model, messages=messages, stream=True, **ASK
    ) as miss:
        assert miss.headers["x-cache"] == "miss"
        chunks = list(miss.parse())
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert all(c.usage is None for c in chunks)  # the client did not ask for usage
    wait_inserts(url, before + 1)

    with client.chat.completions.with_streaming_response.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True}, **ASK
    ) as hit:
        assert hit.headers["x-cache"] == "hit-exact"
        replayed = list(hit.parse())
    assert "".join(c.choices[0].delta.content or "" for c in replayed if c.choices) == streamed
    assert [c.choices[0].finish_reason for c in replayed if c.choices][-1] == "stop"
    assert replayed[-1].usage is not None and replayed[-1].usage.completion_tokens > 0

    whole = client.chat.completions.with_raw_response.create(model=model, messages=messages, **ASK)
    assert whole.headers["x-cache"] == "hit-exact"
    assert whole.parse().choices[0].message.content == streamed


def test_cache_control_header(cached_gateway: str, engine: Any) -> None:
    url, model = cached_gateway, engine.model
    q = "What is the opposite of hot?"

    def ask_with(cache_control: str) -> Any:
        return ask(url, model, q, extra_headers={"cache-control": cache_control})

    with pytest.raises(openai.APIStatusError) as caught:
        ask_with("only-if-cached")
    assert caught.value.status_code == 504  # never reached an engine

    before = cache_stats(url)["inserts"]
    assert ask_with("no-store").headers["x-cache"] == "bypass"
    time.sleep(0.5)
    assert cache_stats(url)["inserts"] == before  # no-store: nothing kept

    assert ask_with("no-cache").headers["x-cache"] == "bypass"  # not looked up, but stored
    wait_inserts(url, before + 1)
    assert ask_with("only-if-cached").headers["x-cache"] == "hit-exact"
    time.sleep(1.1)
    assert ask_with("max-age=1").headers["x-cache"] == "miss"  # older than a second


def test_extension_namespace_and_threshold(cached_gateway: str, engine: Any) -> None:
    url, model = cached_gateway, engine.model
    before = cache_stats(url)["inserts"]
    first = ask(url, model, "Where is my parcel?", extra_body={"cache": {"namespace": "faq"}})
    assert first.headers["x-cache"] == "miss"
    wait_inserts(url, before + 1)
    # Another namespace is another scope.
    assert ask(url, model, "Where is my parcel?").headers["x-cache"] == "miss"
    # A paraphrase under a strict per-request threshold is a miss, under a loose one a hit.
    strict = ask(
        url,
        model,
        "Where's my parcel?",
        extra_body={"cache": {"namespace": "faq", "threshold": 0.9999}},
    )
    assert strict.headers["x-cache"] == "miss"
    with pytest.raises(openai.BadRequestError) as caught:
        ask(url, model, "Where is my parcel?", extra_body={"cache": {"threshold": 7}})
    assert caught.value.body["param"] == "cache"  # type: ignore[index]


def test_tenants_never_share_answers(cached_gateway: str, engine: Any) -> None:
    url, model = cached_gateway, engine.model
    before = cache_stats(url)["inserts"]
    assert ask(url, model, "What time do you open?", tenant="acme").headers["x-cache"] == "miss"
    wait_inserts(url, before + 1)
    assert (
        ask(url, model, "What time do you open?", tenant="acme").headers["x-cache"] == "hit-exact"
    )
    assert ask(url, model, "What time do you open?", tenant="globex").headers["x-cache"] == "miss"


def test_auth_errors(cached_gateway: str, engine: Any) -> None:
    r = httpx.post(f"{cached_gateway}/v1/chat/completions", json={"model": engine.model})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"
    wrong = httpx.get(f"{cached_gateway}/v1/models", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401
    tenant = httpx.get(
        f"{cached_gateway}/admin/cache/stats", headers={"authorization": f"Bearer {KEYS['acme']}"}
    )
    assert tenant.status_code == 403


def test_admin_warm_stats_delete_flush(cached_gateway: str, engine: Any) -> None:
    url, model = cached_gateway, engine.model
    admin = {"authorization": f"Bearer {ADMIN}"}
    warm = httpx.post(
        f"{url}/admin/cache/warm",
        headers=admin,
        json={
            "model": model,
            "tenant": "acme",
            "params": ASK,
            "entries": [
                {
                    "messages": [{"role": "user", "content": "Do you ship abroad?"}],
                    "answer": "Yes, worldwide.",
                }
            ],
        },
    )
    assert warm.status_code == 200 and warm.json() == {"stored": 1}
    hit = ask(url, model, "Do you ship abroad?")
    assert hit.headers["x-cache"] == "hit-exact"
    assert hit.parse().choices[0].message.content == "Yes, worldwide."
    stats = cache_stats(url)
    assert stats["hits"] >= 1 and stats["entries"] >= 1 and 0 < stats["hit_ratio"] <= 1

    bad = httpx.post(
        f"{url}/admin/cache/warm", headers=admin, json={"model": model, "entries": [{}]}
    )
    assert bad.status_code == 400

    flushed = httpx.delete(f"{url}/admin/cache", headers=admin)
    assert flushed.status_code == 200 and flushed.json()["deleted"] >= 1
    assert cache_stats(url)["entries"] == 0
    assert ask(url, model, "Do you ship abroad?").headers["x-cache"] == "miss"


def test_warm_from_a_jsonl_file(cached_gateway: str, engine: Any, tmp_path: Any) -> None:
    url, model = cached_gateway, engine.model
    lines = [
        {
            "messages": [{"role": "user", "content": f"Do you have branch number {i}?"}],
            "answer": f"Yes, {i}.",
        }
        for i in range(5)
    ]
    path = tmp_path / "faq.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "cache",
            "warm",
            str(path),
            "--model",
            model,
            "--url",
            url,
            "--tenant",
            "acme",
        ],
        env={**os.environ, "GATEWAY_ADMIN_KEY": ADMIN},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "stored 5 entries" in result.stdout
    hit = client_for(url).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "Do you have branch number 3?"}]
    )
    assert hit.headers["x-cache"] == "hit-exact"
    assert hit.parse().choices[0].message.content == "Yes, 3."
