"""cache_query: what is cacheable, what the scope holds, what the query text is."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.cache import CacheControl, CacheQuery, cache_query
from tests.cache.helpers import chat

CONTROL = CacheControl()


def query(body: dict[str, Any], *, tenant: str = "acme", **kwargs: Any) -> CacheQuery:
    kind = kwargs.pop("kind", "chat")
    control = kwargs.pop("control", CONTROL)
    q = cache_query(kind, body, tenant, control, **kwargs)
    assert q is not None
    return q


def test_chat_query_text_is_the_last_user_message() -> None:
    q = query(
        chat("  How do I reset my password?\r\n", history=(("user", "hi"), ("assistant", "hello")))
    )
    assert q.text == "How do I reset my password?"
    assert q.model == "m1"
    assert q.kind == "chat"
    assert q.namespace == "default"
    assert q.scope.startswith("default:")
    assert q.control is CONTROL


def test_completion_query_text_is_the_prompt() -> None:
    q = query({"model": "m1", "prompt": "Once upon a time"}, kind="completion")
    assert q.text == "Once upon a time"
    assert query({"model": "m1", "prompt": ["Once upon a time"]}, kind="completion") == q


def test_text_only_content_parts_are_the_text() -> None:
    parts = chat("x")
    parts["messages"][-1]["content"] = [
        {"type": "text", "text": "How do I"},
        {"type": "text", "text": "reset my password?"},
    ]
    plain = chat("How do I\nreset my password?")
    assert query(parts).exact_key == query(plain).exact_key
    system_parts = chat("hi")
    system_parts["messages"][0]["content"] = [
        {"type": "text", "text": "You are a helpful support agent."}
    ]
    assert query(system_parts).scope == query(chat("hi")).scope


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda b: b.update(n=2), "several choices"),
        (lambda b: b.update(best_of=3), "several choices"),
        (lambda b: b.update(logprobs=True), "logprobs"),
        (lambda b: b.update(top_logprobs=2), "logprobs"),
        (lambda b: b.update(prompt_logprobs=1), "logprobs"),
        (lambda b: b.update(echo=True), "echo"),
        (lambda b: b.update(tools=[{"type": "function", "function": {"name": "f"}}]), "tools"),
        (lambda b: b.update(functions=[{"name": "f"}]), "functions"),
        (lambda b: b.update(modalities=["text", "audio"]), "audio out"),
        (lambda b: b.update(audio={"voice": "alloy"}), "audio out"),
        (lambda b: b["messages"].append({"role": "assistant", "content": "Sure"}), "not user"),
        (lambda b: b["messages"][-1].update(content="   "), "empty text"),
        (lambda b: b["messages"][-1].update(content=None), "no text"),
        (lambda b: b["messages"][-1].update(content=[]), "no parts"),
        (
            lambda b: b["messages"][-1].update(
                content=[
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                ]
            ),
            "image",
        ),
        (lambda b: b.update(messages=[]), "no messages"),
        (lambda b: b.update(messages="hi"), "messages not a list"),
        (lambda b: b.pop("model"), "no model"),
    ],
)
def test_uncacheable_chat_requests(mutate: Any, why: str) -> None:
    body = chat("How do I reset my password?")
    mutate(body)
    assert cache_query("chat", body, "acme", CONTROL) is None, why


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m1", "prompt": ["a", "b"]},
        {"model": "m1", "prompt": [1, 2, 3]},
        {"model": "m1", "prompt": [[1, 2]]},
        {"model": "m1", "prompt": ""},
        {"model": "m1", "prompt": "x", "echo": True},
        {"model": "m1", "prompt": "x", "logprobs": 0},
        {"model": "m1", "prompt": "x", "best_of": 2},
        {"model": "m1", "prompt": "x", "n": 3},
        {"model": "m1"},
    ],
)
def test_uncacheable_completion_requests(body: dict[str, Any]) -> None:
    assert cache_query("completion", body, "acme", CONTROL) is None


def test_n_one_and_logprobs_false_are_cacheable() -> None:
    assert cache_query("chat", chat("hi", n=1, logprobs=False), "acme", CONTROL) is not None
    assert cache_query("chat", chat("hi", tools=[]), "acme", CONTROL) is not None


def test_tools_are_cacheable_when_enabled_and_part_of_the_scope() -> None:
    tool: dict[str, Any] = {"type": "function", "function": {"name": "weather", "parameters": {}}}
    with_tools = query(chat("hi", tools=[tool]), allow_tools=True)
    other = copy.deepcopy(tool)
    other["function"]["name"] = "stocks"
    assert with_tools.scope != query(chat("hi", tools=[other]), allow_tools=True).scope
    assert with_tools.scope != query(chat("hi"), allow_tools=True).scope
    choice = query(chat("hi", tools=[tool], tool_choice="required"), allow_tools=True)
    assert choice.scope != with_tools.scope


BASE = chat("How do I reset my password?", temperature=0.2, max_tokens=64)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("tenant", {"tenant": "globex"}),
        ("namespace", {"control": CacheControl(namespace="faq")}),
        ("kind", {"kind": "completion"}),
        (
            "model",
            {
                "body": chat(
                    "How do I reset my password?", model="m2", temperature=0.2, max_tokens=64
                )
            },
        ),
        (
            "system prompt",
            {
                "body": chat(
                    "How do I reset my password?",
                    system="Be terse.",
                    temperature=0.2,
                    max_tokens=64,
                )
            },
        ),
        (
            "no system prompt",
            {
                "body": chat(
                    "How do I reset my password?", system=None, temperature=0.2, max_tokens=64
                )
            },
        ),
        (
            "earlier turns",
            {
                "body": chat(
                    "How do I reset my password?",
                    history=(("user", "I use the app"), ("assistant", "OK")),
                    temperature=0.2,
                    max_tokens=64,
                )
            },
        ),
        ("temperature", {"body": {**BASE, "temperature": 0.7}}),
        ("temperature omitted", {"body": {k: v for k, v in BASE.items() if k != "temperature"}}),
        ("max_tokens", {"body": {**BASE, "max_tokens": 65}}),
        ("top_p", {"body": {**BASE, "top_p": 0.9}}),
        ("top_k", {"body": {**BASE, "top_k": 5}}),
        ("stop", {"body": {**BASE, "stop": ["\n"]}}),
        ("seed", {"body": {**BASE, "seed": 1}}),
        ("presence_penalty", {"body": {**BASE, "presence_penalty": 0.5}}),
        ("frequency_penalty", {"body": {**BASE, "frequency_penalty": 0.5}}),
        ("logit_bias", {"body": {**BASE, "logit_bias": {"50256": -100}}}),
        ("response_format", {"body": {**BASE, "response_format": {"type": "json_object"}}}),
        ("unknown field", {"body": {**BASE, "guided_choice": ["yes", "no"]}}),
        (
            "last message name",
            {
                "body": {
                    **BASE,
                    "messages": [*BASE["messages"][:-1], {**BASE["messages"][-1], "name": "bob"}],
                }
            },
        ),
    ],
)
def test_every_scope_element_changes_the_scope(name: str, kwargs: dict[str, Any]) -> None:
    base = query(BASE)
    body = kwargs.pop("body", BASE)
    if kwargs.get("kind") == "completion":
        body = {
            "model": "m1",
            "prompt": "How do I reset my password?",
            "temperature": 0.2,
            "max_tokens": 64,
        }
    other = query(body, **kwargs)
    assert other.text == base.text
    assert other.scope != base.scope, name
    assert other.exact_key != base.exact_key, name


@pytest.mark.parametrize(
    "extra",
    [
        {"stream": True},
        {"stream": True, "stream_options": {"include_usage": True}},
        {"user": "u-123"},
        {"cache": {"threshold": 0.9}},
        {"metadata": {"k": "v"}},
        {"store": True},
        {"service_tier": "auto"},
        {"seed": None},  # null == absent
    ],
)
def test_fields_that_do_not_change_the_answer_are_not_in_the_scope(extra: dict[str, Any]) -> None:
    assert query({**BASE, **extra}).exact_key == query(BASE).exact_key


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ({"temperature": 1}, {"temperature": 1.0}),
        ({"stop": "\n"}, {"stop": ["\n"]}),
        ({"max_completion_tokens": 64}, {"max_tokens": 64}),
    ],
)
def test_equivalent_spellings_share_a_scope(left: dict[str, Any], right: dict[str, Any]) -> None:
    body = chat("hi")
    assert query({**body, **left}).scope == query({**body, **right}).scope


def test_key_order_does_not_matter() -> None:
    body = chat("hi", temperature=0.1, top_p=0.5)
    reordered = dict(reversed(list(body.items())))
    assert query(reordered).exact_key == query(body).exact_key


def test_exact_key_ignores_surrounding_whitespace_only() -> None:
    base = query(chat("How do I reset my password?"))
    assert query(chat("\n How do I reset my password?  ")).exact_key == base.exact_key
    assert query(chat("How do I reset my password ?")).exact_key != base.exact_key
    assert query(chat("how do I reset my password?")).exact_key != base.exact_key
    assert query(chat("How do I reset my password?")).scope == base.scope


def test_unicode_nfc_normalisation() -> None:
    composed = query(chat("Caf\u00e9 hours?"))
    decomposed = query(chat("Cafe\u0301 hours?"))
    assert composed.exact_key == decomposed.exact_key
    assert composed.text == "Caf\u00e9 hours?"


def test_the_body_is_not_modified() -> None:
    body = chat("hi", max_completion_tokens=5, stop="x")
    snapshot = copy.deepcopy(body)
    query(body)
    assert body == snapshot
