"""The official client's Responses API calls through the gateway, in front of the real engine:
miss then hit (JSON and stream, sync and async), follow-ups with previous_response_id (state kept
by the gateway), retrieve and delete."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import openai
import pytest

pytestmark = pytest.mark.e2e

HIT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


@pytest.fixture(scope="module")
def client(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0)


@pytest.fixture
def aclient(gateway: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0)


def _args(engine: Any, question: str = "What is the capital of France?") -> dict[str, Any]:
    """A request that ends early with status completed (so it is stored), in a namespace of
    its own so that each test starts with an empty cache."""
    return {
        "model": engine.model,
        "instructions": "Answer in one short sentence.",
        "input": question,
        "max_output_tokens": 48,
        "temperature": 0,
        "extra_body": {"cache": {"namespace": uuid.uuid4().hex}},
    }


def _wait_cached(client: openai.OpenAI, args: dict[str, Any]) -> None:
    """Until the answer of ``args`` is in the cache (it is stored just after the response)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            client.responses.create(**args, extra_headers={"cache-control": "only-if-cached"})
            return
        except openai.APIStatusError as error:
            if error.status_code != 504 or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _plain(text: str) -> bool:
    return bool(text.strip()) and not any(marker in text for marker in ("Ċ", "Ġ", "<|im_"))


def test_json_miss_then_hit(client: openai.OpenAI, engine: Any) -> None:
    args = _args(engine)
    miss = client.responses.with_raw_response.create(**args)
    first = miss.parse()
    assert miss.headers["x-cache"] == "miss" and miss.headers["x-gateway-backend"]
    assert first.object == "response" and first.status == "completed"
    assert _plain(first.output_text)
    assert first.usage is not None and first.usage.output_tokens > 0
    _wait_cached(client, args)
    hit = client.responses.with_raw_response.create(**args)
    second = hit.parse()
    assert hit.headers["x-cache"] == "hit-exact"
    assert float(hit.headers["x-cache-similarity"]) == 1.0 and "age" in hit.headers
    assert second.output_text == first.output_text
    assert second.id != first.id and second.id.startswith("resp_")
    assert second.status == "completed" and second.model == engine.model
    assert second.output[0].type == "message" and second.output[0].role == "assistant"
    assert second.usage is not None
    assert (second.usage.input_tokens, second.usage.output_tokens) == (
        first.usage.input_tokens,
        first.usage.output_tokens,
    )
    # A replayed response is stored like any other: it can be followed up.
    follow = client.responses.create(
        model=engine.model, input="Why?", previous_response_id=second.id, max_output_tokens=8
    )
    assert follow.previous_response_id == second.id


def test_stream_miss_then_hit(client: openai.OpenAI, engine: Any) -> None:
    args = _args(engine, "What is the capital of Italy?")
    whole = client.responses.create(**args, extra_headers={"cache-control": "no-store"})
    with client.responses.with_streaming_response.create(**args, stream=True) as miss:
        assert miss.headers["x-cache"] == "miss"
        missed = list(miss.parse())
    _wait_cached(client, args)
    with client.responses.with_streaming_response.create(**args, stream=True) as hit:
        assert hit.headers["x-cache"] == "hit-exact"
        replayed = list(hit.parse())
    for events in (missed, replayed):
        assert events[0].type == "response.created" and events[-1].type == "response.completed"
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert text == whole.output_text
        assert events[-1].response.output_text == whole.output_text
        assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.type for e in replayed] == HIT_EVENTS
    missed_types = [e.type for e in missed]
    assert [t for t in missed_types if t != "response.output_text.delta"] == [
        t for t in HIT_EVENTS if t != "response.output_text.delta"
    ]


async def test_async_client_json_and_stream(aclient: openai.AsyncOpenAI, engine: Any) -> None:
    args = _args(engine, "What is the capital of Spain?")
    first = await aclient.responses.create(**args)
    assert _plain(first.output_text)
    _wait_cached(openai.OpenAI(base_url=str(aclient.base_url), api_key="unused"), args)
    stream = await aclient.responses.create(**args, stream=True)
    events = [event async for event in stream]
    assert [e.type for e in events] == HIT_EVENTS  # replayed from the cache
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == (
        first.output_text
    )


def test_a_paraphrase_is_a_semantic_hit(client: openai.OpenAI, engine: Any) -> None:
    args = _args(engine, "What is the capital of Japan?")
    first = client.responses.create(**args)
    _wait_cached(client, args)
    again = client.responses.with_raw_response.create(
        **{**args, "input": [{"role": "user", "content": "What's the capital of Japan?"}]}
    )
    assert again.headers["x-cache"] == "hit-semantic"
    assert again.parse().output_text == first.output_text


def test_chat_and_responses_do_not_share_entries(
    client: openai.OpenAI, gateway: str, engine: Any
) -> None:
    args = _args(engine, "What is the capital of Portugal?")
    client.responses.create(**args)
    chat = httpx.post(
        f"{gateway}/v1/chat/completions",
        json={
            "model": engine.model,
            "messages": [
                {"role": "system", "content": args["instructions"]},
                {"role": "user", "content": args["input"]},
            ],
            "max_tokens": 48,
            "temperature": 0,
            "cache": args["extra_body"]["cache"],
        },
        timeout=120,
    )
    assert chat.status_code == 200 and chat.headers["x-cache"] == "miss"


def test_follow_up_uses_the_stored_conversation_and_bypasses_the_cache(
    client: openai.OpenAI, engine: Any
) -> None:
    first = client.responses.create(**_args(engine, "My name is Ada. Say hello to me."))
    follow = {
        "model": engine.model,
        "input": "What is my name?",
        "previous_response_id": first.id,
        "max_output_tokens": 32,
        "temperature": 0,
    }
    for _ in range(2):  # asked twice: never from the cache
        raw = client.responses.with_raw_response.create(**follow)
        assert raw.headers["x-cache"] == "bypass"
        reply = raw.parse()
        assert reply.previous_response_id == first.id and _plain(reply.output_text)
    items = client.responses.input_items.list(reply.id, order="asc").data
    texts = [getattr(item, "content", None) for item in items]
    assert [getattr(item, "role", None) for item in items] == ["user", "assistant", "user"]
    assert texts[0][0].text == "My name is Ada. Say hello to me."  # type: ignore[index]
    assert texts[1][0].text == first.output_text  # type: ignore[index]
    assert texts[2][0].text == "What is my name?"  # type: ignore[index]
    # The follow-up of a follow-up carries the whole conversation.
    third = client.responses.create(**{**follow, "previous_response_id": reply.id})
    assert len(client.responses.input_items.list(third.id).data) == 5


def test_a_streamed_response_can_be_followed_up(client: openai.OpenAI, engine: Any) -> None:
    events = list(client.responses.create(**_args(engine, "Name a colour."), stream=True))
    completed = events[-1]
    assert completed.type == "response.completed"
    reply = client.responses.create(
        model=engine.model,
        input="Name another one.",
        previous_response_id=completed.response.id,
        max_output_tokens=16,
    )
    assert reply.previous_response_id == completed.response.id


def test_retrieve_and_delete(client: openai.OpenAI, engine: Any) -> None:
    made = client.responses.create(**_args(engine, "What is the capital of Greece?"))
    got = client.responses.retrieve(made.id)
    assert got.id == made.id and got.output_text == made.output_text
    client.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model=engine.model, input="And then?", previous_response_id=made.id)
    assert caught.value.body["code"] == "previous_response_not_found"  # type: ignore[index]


def test_store_false_is_not_kept(client: openai.OpenAI, engine: Any) -> None:
    made = client.responses.create(**_args(engine, "What is the capital of Peru?"), store=False)
    assert made.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)


def test_only_if_cached_and_no_store(gateway: str, engine: Any) -> None:
    body = {
        "model": engine.model,
        "input": "What is the capital of Chile?",
        "max_output_tokens": 32,
        "cache": {"namespace": uuid.uuid4().hex},
    }
    url = f"{gateway}/v1/responses"
    missing = httpx.post(url, json=body, headers={"cache-control": "only-if-cached"})
    assert missing.status_code == 504 and missing.json()["error"]["code"] == "not_cached"
    stored = httpx.post(url, json=body, headers={"cache-control": "no-store"}, timeout=120)
    assert stored.status_code == 200 and stored.headers["x-cache"] == "bypass"
    still = httpx.post(url, json=body, headers={"cache-control": "only-if-cached"})
    assert still.status_code == 504


def test_invalid_bodies_are_400(gateway: str, engine: Any) -> None:
    url = f"{gateway}/v1/responses"
    for body, param in (
        ({"model": engine.model}, "input"),
        ({"model": engine.model, "input": 5}, "input"),
        ({"model": engine.model, "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
    ):
        reply = httpx.post(url, json=body)
        assert reply.status_code == 400, reply.text
        assert reply.json()["error"]["param"].startswith(param)


def test_metrics_count_the_route(client: openai.OpenAI, gateway: str, engine: Any) -> None:
    client.responses.create(**_args(engine, "What is the capital of Norway?"))
    text = httpx.get(f"{gateway}/metrics").text
    assert 'route="/v1/responses"' in text


def test_an_answer_cut_by_max_output_tokens_is_incomplete(
    client: openai.OpenAI, engine: Any
) -> None:
    args = {**_args(engine, "Tell me a long story about a dragon."), "max_output_tokens": 4}
    whole = client.responses.create(**args)
    assert whole.status == "incomplete" and whole.incomplete_details is not None
    assert whole.incomplete_details.reason == "max_output_tokens"
    events = list(client.responses.create(**args, stream=True))
    assert events[-1].type == "response.incomplete"  # as OpenAI ends it (vLLM: "completed")
    assert events[-1].response.status == "incomplete"
