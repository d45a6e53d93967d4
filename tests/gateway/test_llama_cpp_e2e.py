"""The gateway in front of a real llama.cpp ``llama-server`` (the bundled SmolLM2-135M GGUF, the
second engine kind): the official client's chat, stream and legacy completions, OpenAI's wire
schema on every miss, the cache (miss, exact and semantic hits), the engine's load as the
gateway scrapes it, and llama-server engines killed under the gateway (breaker, failover)."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.config import BackendConfig
from tests.support.cache_http import (
    ADMIN,
    KEYS,
    ask,
    auth_settings,
    cache_stats,
    client_for,
    wait_inserts,
)
from tests.support.engine import EngineEndpoint
from tests.support.gateway import running_gateway
from tests.support.llama_engine import llama_engine_process
from tests.wire.openai_schema import check, completion_chunk

pytestmark = pytest.mark.e2e

QUESTION = "What is the capital of France? Answer in one word."
TIMEOUT = 120.0


def _plain(text: str) -> bool:
    return bool(text.strip()) and not any(marker in text for marker in ("Ċ", "Ġ", "<|im_", "</s>"))


def _headers() -> dict[str, str]:
    return {"authorization": f"Bearer {KEYS['acme']}"}


def _body(**extra: Any) -> dict[str, Any]:
    """A chat request in a cache namespace of its own (every test starts with a miss)."""
    return {
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 16,
        "temperature": 0,
        "cache": {"namespace": uuid.uuid4().hex},
        **extra,
    }


def _sse(url: str, body: dict[str, Any]) -> tuple[str, list[Any]]:
    """(x-cache, the data of every event; ``[DONE]`` kept as the string)."""
    with httpx.stream("POST", url, json=body, headers=_headers(), timeout=TIMEOUT) as response:
        assert response.status_code == 200, response.read()
        lines = [line[5:].strip() for line in response.iter_lines() if line.startswith("data:")]
        return response.headers["x-cache"], [x if x == "[DONE]" else json.loads(x) for x in lines]


def test_models_lists_the_served_name(llama_gateway: str, llama_engine: EngineEndpoint) -> None:
    models = client_for(llama_gateway).models.list()
    assert llama_engine.model in [m.id for m in models.data]
    check("ListModelsResponse", httpx.get(f"{llama_gateway}/v1/models", headers=_headers()).json())


def test_chat_is_plain_text_in_openai_shape(llama_gateway: str) -> None:
    r = httpx.post(
        f"{llama_gateway}/v1/chat/completions", json=_body(), headers=_headers(), timeout=TIMEOUT
    )
    assert r.status_code == 200 and r.headers["x-cache"] == "miss", r.text
    check("CreateChatCompletionResponse", r.json())
    reply = openai.types.chat.ChatCompletion.model_validate(r.json())
    assert reply.object == "chat.completion" and reply.model == "smollm2-135m-instruct"
    assert reply.id and reply.created > 0
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and _plain(choice.message.content or "")
    assert "paris" in (choice.message.content or "").lower()
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage is not None and reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


@pytest.mark.parametrize("include_usage", [False, True])
def test_stream_matches_the_whole_answer(llama_gateway: str, include_usage: bool) -> None:
    url = f"{llama_gateway}/v1/chat/completions"
    whole = httpx.post(url, json=_body(), headers=_headers(), timeout=TIMEOUT).json()
    stream = _body(stream=True, stream_options={"include_usage": include_usage})
    cache, events = _sse(url, stream)
    assert cache == "miss" and events[-1] == "[DONE]"
    chunks = events[:-1]
    for chunk in chunks:
        check("CreateChatCompletionStreamResponse", chunk)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert [f for f in finishes if f] == [whole["choices"][0]["finish_reason"]]
    usage = [c["usage"] for c in chunks if c.get("usage")]
    assert len(usage) == int(include_usage)
    if include_usage:
        assert usage[0]["completion_tokens"] == whole["usage"]["completion_tokens"]


def test_legacy_completions_json_and_stream(llama_gateway: str) -> None:
    client = client_for(llama_gateway)
    args: dict[str, Any] = {
        "model": "smollm2-135m-instruct",
        "prompt": "The sky is",
        "max_tokens": 8,
        "temperature": 0,
    }
    reply = client.completions.with_raw_response.create(**args)
    assert reply.headers["x-cache"] == "miss"
    check("CreateCompletionResponse", json.loads(reply.text))
    text = reply.parse().choices[0].text
    assert reply.parse().object == "text_completion" and _plain(text)
    cache, events = _sse(
        f"{llama_gateway}/v1/completions", {**args, "stream": True, "cache": {"namespace": "x"}}
    )
    assert cache == "miss" and events[-1] == "[DONE]"
    for chunk in events[:-1]:
        check("CreateCompletionResponse", completion_chunk(chunk))
    assert "".join(c["choices"][0]["text"] for c in events[:-1] if c["choices"]) == text


def test_miss_then_exact_then_semantic_hit(llama_gateway: str) -> None:
    url, model = llama_gateway, "smollm2-135m-instruct"
    question = f"How do I reset my password for account {uuid.uuid4().hex[:6]}?"
    before = cache_stats(url)["inserts"]
    first = ask(url, model, question)
    assert first.headers["x-cache"] == "miss"
    answer = first.parse().choices[0].message.content
    assert _plain(answer or "")
    wait_inserts(url, before + 1)
    exact = ask(url, model, question)
    assert exact.headers["x-cache"] == "hit-exact"
    assert exact.parse().choices[0].message.content == answer
    check("CreateChatCompletionResponse", json.loads(exact.text))
    paraphrase = ask(url, model, question.lower().rstrip("?"))
    assert paraphrase.headers["x-cache"] == "hit-semantic"
    assert paraphrase.parse().choices[0].message.content == answer


def test_the_gateway_reads_llama_servers_load(llama_gateway: str) -> None:
    """llamacpp:requests_processing/deferred are read as running/waiting (None if unmapped);
    with no request in flight a scrape soon shows both at 0."""
    deadline = time.monotonic() + 15
    while True:
        load = _backends(llama_gateway)[0]["engine_load"]
        idle = load is not None and (load["running"], load["waiting"]) == (0, 0)
        if idle or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert load is not None and load["running"] is not None and load["waiting"] is not None
    assert idle, load


# -- engines killed under the gateway -----------------------------------------------------------


def _backends(gateway: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{gateway}/admin/backends", headers={"authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200
    return list(r.json()["backends"])


def _predicted(engine_url: str) -> float:
    """llama-server's counter of generated tokens (it grows with every request it answers)."""
    text = httpx.get(f"{engine_url}/metrics", timeout=5).text
    line = next(x for x in text.splitlines() if x.startswith("llamacpp:tokens_predicted_total"))
    return float(line.split()[-1])


def _chat(gateway: str, text: str) -> httpx.Response:
    body = {
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 4,
        "temperature": 0,
    }
    return httpx.post(f"{gateway}/v1/chat/completions", json=body, headers=_headers(), timeout=60)


def test_killed_engine_opens_its_breaker_the_other_serves_and_it_comes_back(
    tmp_path: Path, llama_engine: EngineEndpoint
) -> None:
    """Two llama-servers, round robin, the active probe every 30 s (the kill lands between two
    probes): real requests' outcomes judge the engines. One is SIGKILLed: every request still
    succeeds (failover before the first byte) and its breaker opens at the first refused
    connection. Started again on its port, the next probe finds it, the half-open trial closes
    the breaker and it serves again."""
    with llama_engine_process(tmp_path) as doomed:
        port = doomed.spec.port
        with running_gateway(
            backends=[BackendConfig(url=doomed.url), BackendConfig(url=llama_engine.url)],
            cache={"enabled": False},
            auth=auth_settings(),
            routing={
                "balancer": {"strategy": "round_robin"},
                "breaker": {"failure_threshold": 1, "cooldown_s": 1.0},
            },
            probe_interval_s=30.0,
        ) as gateway:
            _wait_healthy(gateway, 2)
            before = _predicted(doomed.url)
            for i in range(4):
                assert _chat(gateway, f"Say hi {i}").status_code == 200
            assert _predicted(doomed.url) > before  # it took its share

            assert doomed.pid is not None
            os.killpg(doomed.pid, signal.SIGKILL)
            for i in range(6):
                r = _chat(gateway, f"Say hello {i}")
                assert r.status_code == 200 and _plain(r.json()["choices"][0]["message"]["content"])
            dead = next(b for b in _backends(gateway) if b["url"] == doomed.url)
            # open, or already half-open after its 1 s cool-down; never closed again by itself
            assert dead["breaker"]["state"] in ("open", "half_open"), dead
            assert "Connect" in dead["breaker"]["last_failure"] and not dead["healthy"]

            with llama_engine_process(tmp_path, port=port) as again:
                deadline = time.monotonic() + 45  # the next probe is at most 30 s away
                while _predicted(again.url) == 0:
                    assert time.monotonic() < deadline, _backends(gateway)
                    assert _chat(gateway, "Say hi again").status_code == 200
                    time.sleep(0.3)
                back = next(b for b in _backends(gateway) if b["url"] == again.url)
                assert back["breaker"]["state"] == "closed"


def _wait_healthy(gateway: str, count: int) -> None:
    deadline = time.monotonic() + 30
    while sum(b["healthy"] for b in _backends(gateway)) < count:
        assert time.monotonic() < deadline, _backends(gateway)
        time.sleep(0.2)


def test_an_error_of_llama_server_reaches_the_client_in_openai_shape(llama_gateway: str) -> None:
    # response_format is passed on unchecked by the gateway; llama-server rejects the type.
    r = httpx.post(
        f"{llama_gateway}/v1/chat/completions",
        json=_body(response_format={"type": "xml"}),
        headers=_headers(),
        timeout=TIMEOUT,
    )
    assert r.status_code == 400, r.text
    check("ErrorResponse", r.json())
    assert "response_format" in r.json()["error"]["message"]
