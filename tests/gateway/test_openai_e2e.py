"""The official openai client against the gateway in front of the real vLLM engine."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from gateway.config import BackendConfig
from tests.support.gateway import running_gateway
from tests.support.servers import free_port

pytestmark = pytest.mark.e2e

QUESTION: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the capital of France? Answer in one word."}
]


@pytest.fixture(scope="module")
def client(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0)


@pytest.fixture
def aclient(gateway: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0)


def _plain(text: str) -> bool:
    return bool(text.strip()) and not any(marker in text for marker in ("Ċ", "Ġ", "<|im_"))


def test_models_lists_the_engine_model(client: openai.OpenAI, engine: Any) -> None:
    assert engine.model in [m.id for m in client.models.list().data]


def test_chat_non_stream(client: openai.OpenAI, engine: Any) -> None:
    reply = client.chat.completions.create(
        model=engine.model,
        messages=QUESTION,
        max_tokens=16,
        temperature=0,
    )
    assert reply.object == "chat.completion"
    assert reply.id and reply.created > 0 and reply.model == engine.model
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert _plain(choice.message.content or "")
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage is not None and reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_chat_stream_with_usage_matches_non_stream(client: openai.OpenAI, engine: Any) -> None:
    args: dict[str, Any] = {
        "model": engine.model,
        "messages": QUESTION,
        "max_tokens": 16,
        "temperature": 0,
    }
    whole = client.chat.completions.create(**args).choices[0].message.content
    chunks = list(
        client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True})
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes in (["stop"], ["length"])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_legacy_completions(client: openai.OpenAI, engine: Any) -> None:
    reply = client.completions.create(
        model=engine.model, prompt="The sky is", max_tokens=8, temperature=0
    )
    assert reply.object == "text_completion"
    assert _plain(reply.choices[0].text)
    streamed = client.completions.create(
        model=engine.model, prompt="The sky is", max_tokens=8, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == reply.choices[0].text


async def test_async_client_chat_and_stream(aclient: openai.AsyncOpenAI, engine: Any) -> None:
    reply = await aclient.chat.completions.create(
        model=engine.model,
        messages=QUESTION,
        max_tokens=16,
        temperature=0,
    )
    assert _plain(reply.choices[0].message.content or "")
    stream = await aclient.chat.completions.create(
        model=engine.model,
        messages=QUESTION,
        max_tokens=16,
        temperature=0,
        stream=True,
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == reply.choices[0].message.content


def test_unknown_field_passes_through_to_the_engine(client: openai.OpenAI, engine: Any) -> None:
    # `ignore_eos` and `min_tokens` are vLLM extensions the gateway does not know.
    reply = client.chat.completions.create(
        model=engine.model,
        messages=QUESTION,
        max_tokens=12,
        extra_body={"ignore_eos": True, "min_tokens": 12},
    )
    assert reply.usage is not None and reply.usage.completion_tokens == 12


# --- errors: always OpenAI's shape, never a 500 ---------------------------------------------


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    return dict(body["error"])


def test_malformed_json_is_400(gateway: str) -> None:
    r = httpx.post(
        f"{gateway}/v1/chat/completions",
        content=b'{"model": ',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    assert "JSON" in _error(r)["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": "hi"}, "messages"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"},
            "stream",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0},
            "max_tokens",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 9},
            "temperature",
        ),
    ],
)
def test_invalid_fields_are_400_naming_the_param(
    gateway: str, body: dict[str, Any], param: str
) -> None:
    r = httpx.post(f"{gateway}/v1/chat/completions", json=body)
    assert r.status_code == 400
    error = _error(r)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


def test_official_client_sees_bad_request(client: openai.OpenAI, engine: Any) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=engine.model, messages=[])
    assert caught.value.status_code == 400


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=QUESTION)
    assert caught.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_body_too_large_is_413(gateway: str, engine: Any) -> None:
    huge = "x" * 2_000_000
    r = httpx.post(
        f"{gateway}/v1/chat/completions",
        json={"model": engine.model, "messages": [{"role": "user", "content": huge}]},
    )
    assert r.status_code == 413
    assert _error(r)["code"] == "request_too_large"


def test_engine_error_is_passed_on_with_its_status(client: openai.OpenAI, engine: Any) -> None:
    # top_k is the engine's field, unknown to the gateway: vLLM itself rejects -5.
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=engine.model,
            messages=QUESTION,
            max_tokens=4,
            extra_body={"top_k": -5},
        )
    assert caught.value.status_code == 400
    assert "top_k" in caught.value.message


def test_huge_max_tokens_is_clamped_to_the_context(client: openai.OpenAI, engine: Any) -> None:
    reply = client.chat.completions.create(
        model=engine.model,
        messages=QUESTION,
        max_tokens=30_000,  # under limits.max_tokens, far over the 2048-token context
        temperature=0,
        stop=["."],
    )
    assert _plain(reply.choices[0].message.content or "")


def test_prompt_longer_than_the_context_is_400_before_the_engine(
    client: openai.OpenAI, engine: Any
) -> None:
    long_text = "word " * 5000  # > 2048 tokens of context, < 1 MiB of body
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=engine.model, messages=[{"role": "user", "content": long_text}]
        )
    assert caught.value.code == "context_length_exceeded"


def test_no_engine_reachable_is_503(engine: Any) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with running_gateway(backends=[BackendConfig(url=dead, models=[engine.model])]) as gw:
        client = openai.OpenAI(base_url=f"{gw}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model=engine.model, messages=QUESTION)
        assert caught.value.status_code == 503


def test_a_streamed_answer_asked_again_at_once_is_not_generated_twice(
    gateway: str, engine: Any
) -> None:
    # The repeat is served by the cache if the insert has landed, else by the finished flight,
    # which stays joinable until then.
    body = {
        "model": engine.model,
        "messages": QUESTION,
        "max_tokens": 64,
        "stop": [".", ",", "\n"],  # ends early with finish_reason "stop", so it is stored
        "temperature": 0,
        "stream": True,
        "cache": {"namespace": uuid.uuid4().hex},
    }
    url = f"{gateway}/v1/chat/completions"
    first, second = httpx.post(url, json=body, timeout=120), httpx.post(url, json=body, timeout=120)
    assert first.status_code == second.status_code == 200
    assert first.headers["x-cache"] == "miss"
    assert '"finish_reason":"stop"' in first.text.replace(" ", "")
    assert second.headers["x-cache"] == "hit-exact" or second.headers["x-gateway-coalesced"] == "1"
    assert first.text.count("[DONE]") == second.text.count("[DONE]") == 1
