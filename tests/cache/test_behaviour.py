"""The cache's behaviour, run against both stores (in-process and a real Redis 8).

Similarities quoted below were measured with the real all-MiniLM-L6-v2 before choosing pairs.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gateway.cache import CacheControl, Embedder, SemanticCache
from tests.cache.conftest import MakeCache
from tests.cache.helpers import answer, q_chat

RESET = "How do I reset my password?"


async def test_exact_hit(cache: SemanticCache) -> None:
    q = q_chat(cache, RESET)
    assert (await cache.lookup(q)).status == "miss"
    entry_id = await cache.insert(q, answer("Use the 'Forgot password' link."))
    assert entry_id
    result = await cache.lookup(q_chat(cache, f"  {RESET} "))
    assert result.status == "hit-exact"
    assert result.entry_id == entry_id
    assert result.answer is not None and result.answer.text == "Use the 'Forgot password' link."
    assert result.answer.finish_reason == "stop" and result.answer.completion_tokens == 7
    assert result.similarity == 1.0
    assert result.age_s is not None and 0 <= result.age_s < 5


@pytest.mark.parametrize(
    ("stored", "asked", "measured"),
    [
        (RESET, "How can I reset my password?", 0.9917),
        (RESET, "How to reset my password?", 0.9923),
        ("How do I cancel my order?", "How can I cancel my order?", 0.9935),
        ("How can I track my package?", "How do I track my package?", 0.9905),
    ],
)
async def test_paraphrase_is_a_semantic_hit(
    cache: SemanticCache, embedder: Embedder, stored: str, asked: str, measured: float
) -> None:
    await cache.insert(q_chat(cache, stored), answer(f"answer to: {stored}"))
    result = await cache.lookup(q_chat(cache, asked))
    assert result.status == "hit-semantic"
    assert result.answer is not None and result.answer.text == f"answer to: {stored}"
    # The reported similarity is the exact float32 cosine, not a quantized score.
    exact = float(await embedder.embed(stored) @ await embedder.embed(asked))
    assert result.similarity == pytest.approx(exact, abs=1e-4)
    assert result.similarity == pytest.approx(measured, abs=2e-3)
    assert result.threshold == 0.95


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        (RESET, "How do I change my email?"),  # cosine 0.48
        (RESET, "How do I change my password?"),  # 0.87: close, but not the same question
        (RESET, "How do I reset my PIN?"),  # 0.62
        ("How do I cancel my order?", "How do I return my order?"),  # 0.73
        ("What is the capital of France?", "What is the capital of Germany?"),  # 0.66
    ],
)
async def test_different_questions_are_misses(
    cache: SemanticCache, stored: str, asked: str
) -> None:
    await cache.insert(q_chat(cache, stored), answer("x"))
    assert (await cache.lookup(q_chat(cache, stored))).status == "hit-exact"
    assert (await cache.lookup(q_chat(cache, asked))).status == "miss"


async def test_threshold_precedence(make_cache: MakeCache) -> None:
    forgot = "I forgot my password, how do I reset it?"  # cosine 0.941 to RESET
    cache = await make_cache(
        namespace_thresholds={"lenient": 0.9}, model_thresholds={"m-lenient": 0.9}
    )
    for ns, model in (("default", "m1"), ("lenient", "m1"), ("default", "m-lenient")):
        control = CacheControl(namespace=ns)
        await cache.insert(q_chat(cache, RESET, model=model, control=control), answer("a"))

    def ask(ns: str = "default", model: str = "m1", threshold: float | None = None) -> Any:
        control = CacheControl(namespace=ns, threshold=threshold)
        return cache.lookup(q_chat(cache, forgot, model=model, control=control))

    assert (await ask()).status == "miss"  # global 0.95
    assert (await ask(threshold=0.9)).status == "hit-semantic"  # request
    assert (await ask(ns="lenient")).status == "hit-semantic"  # namespace
    assert (await ask(model="m-lenient")).status == "hit-semantic"  # model
    assert (await ask(ns="lenient", threshold=0.99)).status == "miss"  # request beats namespace
    result = await ask(ns="lenient")
    assert result.threshold == 0.9 and result.similarity == pytest.approx(0.9414, abs=2e-3)


TOOL = {"type": "function", "function": {"name": "lookup_account", "parameters": {}}}


@pytest.mark.parametrize(
    ("element", "stored", "asked"),
    [
        ("tenant", {"tenant": "acme"}, {"tenant": "globex"}),
        ("namespace", {}, {"control": CacheControl(namespace="other")}),
        ("model", {}, {"model": "m2"}),
        ("system prompt", {}, {"system": "You are a pirate."}),
        ("earlier turns", {}, {"history": (("user", "I bank with you"), ("assistant", "OK"))}),
        ("tools", {"tools": [TOOL]}, {}),
        ("tool_choice", {"tools": [TOOL]}, {"tools": [TOOL], "tool_choice": "required"}),
        ("temperature", {"temperature": 0.0}, {"temperature": 0.8}),
        ("max_tokens", {"max_tokens": 50}, {"max_tokens": 500}),
        ("stop", {}, {"stop": ["."]}),
        ("seed", {"seed": 1}, {"seed": 2}),
        ("response_format", {}, {"response_format": {"type": "json_object"}}),
    ],
)
async def test_isolation_on_every_scope_element(
    make_cache: MakeCache, element: str, stored: dict[str, Any], asked: dict[str, Any]
) -> None:
    cache = await make_cache(cache_tool_requests=True)
    await cache.insert(q_chat(cache, RESET, **stored), answer("scoped"))
    # The same request hits, exactly and semantically ...
    assert (await cache.lookup(q_chat(cache, RESET, **stored))).status == "hit-exact"
    paraphrase = "How can I reset my password?"
    assert (await cache.lookup(q_chat(cache, paraphrase, **stored))).status == "hit-semantic"
    # ... and a request differing in one scope element gets nothing, in either tier.
    assert (await cache.lookup(q_chat(cache, RESET, **asked))).status == "miss", element
    assert (await cache.lookup(q_chat(cache, paraphrase, **asked))).status == "miss", element


async def test_fields_outside_the_scope_still_hit(cache: SemanticCache) -> None:
    await cache.insert(q_chat(cache, RESET), answer("a"))
    for extra in ({"stream": True, "stream_options": {"include_usage": True}}, {"user": "u1"}):
        assert (await cache.lookup(q_chat(cache, RESET, **extra))).status == "hit-exact"


async def test_expired_entries_are_never_served_and_the_sweep_removes_them(
    cache: SemanticCache,
) -> None:
    short = q_chat(cache, RESET, control=CacheControl(ttl_s=1.0))
    lasting = q_chat(cache, "How do I change my email?")  # same scope, long TTL
    await cache.insert(short, answer("short-lived"))
    await cache.insert(lasting, answer("long-lived"))
    assert (await cache.lookup(short)).status == "hit-exact"
    await asyncio.sleep(1.2)
    assert await cache.store.scope_size(short.scope) == 2  # vector still there, not swept yet
    assert (await cache.lookup(short)).status == "miss"
    paraphrase = q_chat(cache, "How can I reset my password?")
    assert (await cache.lookup(paraphrase)).status == "miss"
    await cache.sweep()
    assert await cache.store.scope_size(short.scope) == 1
    assert (await cache.stats())["entries"] == 1
    assert (await cache.lookup(lasting)).status == "hit-exact"


async def test_the_periodic_sweep_runs_by_itself(make_cache: MakeCache) -> None:
    cache = await make_cache(sweep_interval_s=0.3)
    q = q_chat(cache, RESET, control=CacheControl(ttl_s=0.5))
    await cache.insert(q, answer("a"))
    await cache.insert(q_chat(cache, "How do I change my email?"), answer("b"))
    deadline = time.monotonic() + 5
    while await cache.store.scope_size(q.scope) != 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert await cache.store.scope_size(q.scope) == 1
    assert (await cache.stats())["swept"] >= 1


async def test_max_age(cache: SemanticCache) -> None:
    await cache.insert(q_chat(cache, RESET), answer("a"))
    await asyncio.sleep(1.1)
    for text, status in ((RESET, "hit-exact"), ("How can I reset my password?", "hit-semantic")):
        young = q_chat(cache, text, control=CacheControl(max_age_s=1))
        assert (await cache.lookup(young)).status == "miss"
        fine = await cache.lookup(q_chat(cache, text, control=CacheControl(max_age_s=60)))
        assert fine.status == status
        assert fine.age_s is not None and 1.0 <= fine.age_s < 60


async def test_no_cache_skips_the_lookup_stores_but_never_replaces(cache: SemanticCache) -> None:
    no_cache = q_chat(cache, RESET, control=CacheControl(lookup=False))
    result = await cache.lookup(no_cache)
    assert (result.status, result.reason) == ("bypass", "no-cache")
    assert await cache.insert(no_cache, answer("first")) is not None  # nothing there: stored
    assert await cache.insert(no_cache, answer("fresh")) is None  # a live entry is never replaced
    hit = await cache.lookup(q_chat(cache, RESET))
    assert hit.answer is not None and hit.answer.text == "first"
    stats = await cache.stats()
    assert stats["entries"] == 1 and stats["inserts_kept_existing"] == 1


async def test_no_store_neither_looks_up_nor_stores(cache: SemanticCache) -> None:
    no_store = q_chat(cache, RESET, control=CacheControl(lookup=False, store=False))
    assert (await cache.lookup(no_store)).status == "bypass"
    assert await cache.insert(no_store, answer("secret")) is None
    assert (await cache.lookup(q_chat(cache, RESET))).status == "miss"
    assert (await cache.stats())["entries"] == 0


async def test_only_if_cached_reports_a_miss_then_a_hit(cache: SemanticCache) -> None:
    q = q_chat(cache, RESET, control=CacheControl(only_if_cached=True))
    assert (await cache.lookup(q)).status == "miss"  # the gateway answers 504
    await cache.insert(q_chat(cache, RESET), answer("a"))
    assert (await cache.lookup(q)).status == "hit-exact"


@pytest.mark.parametrize("finish", ["abort", "error", "tool_calls", "content_filter"])
async def test_only_finished_answers_are_stored(cache: SemanticCache, finish: str) -> None:
    q = q_chat(cache, RESET)
    assert await cache.insert(q, answer("broken off", finish_reason=finish)) is None
    assert await cache.insert(q, answer("", finish_reason="stop")) is None
    assert (await cache.lookup(q)).status == "miss"
    assert (await cache.stats())["not_stored"] == 2


async def test_answers_cut_at_max_tokens_are_stored_and_replayed_as_cut(
    cache: SemanticCache,
) -> None:
    # max_tokens is in the scope: the same request gets the same cut answer from the engine.
    q = q_chat(cache, RESET, max_tokens=16)
    assert await cache.insert(q, answer("Go to settings and", finish_reason="length"))
    result = await cache.lookup(q_chat(cache, RESET, max_tokens=16))
    assert result.status == "hit-exact"
    assert result.answer is not None and result.answer.finish_reason == "length"
    assert (await cache.lookup(q_chat(cache, RESET, max_tokens=32))).status == "miss"


async def test_store_finish_reasons_is_honoured(make_cache: MakeCache) -> None:
    cache = await make_cache(store_finish_reasons=["stop"])
    q = q_chat(cache, RESET)
    assert await cache.insert(q, answer("cut off", finish_reason="length")) is None
    assert (await cache.lookup(q)).status == "miss"


async def test_long_texts_use_the_exact_tier_only(cache: SemanticCache) -> None:
    document = "Our terms of service say many things. " * 80  # > 256 tokens
    stored = q_chat(cache, document + "Summarize the refund policy.")
    asked = q_chat(cache, document + "Translate it to French.")
    await cache.insert(stored, answer("summary"))
    assert (await cache.lookup(stored)).status == "hit-exact"
    # Both texts embed to (nearly) the same vector: only their first 256 tokens are seen.
    assert (await cache.lookup(asked)).status == "miss"


async def test_concurrent_inserts_and_lookups_lose_and_mix_nothing(cache: SemanticCache) -> None:
    actions = ["reset", "change", "cancel", "delete", "renew", "update", "verify", "lock"]
    actions += ["find", "replace"]
    things = ["password", "email", "card", "account", "address", "phone number", "order"]
    things += ["subscription", "PIN", "username"]
    texts = [f"How do I {a} my {t}?" for a in actions for t in things]
    assert len(set(texts)) == 100

    async def insert_then_read(i: int) -> tuple[str | None, str]:
        q = q_chat(cache, texts[i])
        await cache.insert(q, answer(f"answer-{i}"))
        result = await cache.lookup(q)
        assert result.answer is not None
        return result.status, result.answer.text

    results = await asyncio.gather(*(insert_then_read(i) for i in range(100)))
    assert results == [("hit-exact", f"answer-{i}") for i in range(100)]
    # Upper case: another exact key but the same vector (the model is uncased): semantic tier.
    semantic = await asyncio.gather(*(cache.lookup(q_chat(cache, t.upper())) for t in texts))
    assert [(r.status, r.answer.text if r.answer else None) for r in semantic] == [
        ("hit-semantic", f"answer-{i}") for i in range(100)
    ]
    stats = await cache.stats()
    assert stats["entries"] == 100
    assert stats["inserts"] == 100 and stats["insert_errors"] == 0


DISTINCT = [
    RESET,
    "What is the capital of France?",
    "How can I track my package?",
    "What are your opening hours?",
    "How do I cancel my order?",
    "Where is the nearest ATM?",
    "Can I get a refund?",
    "How do I change my email?",
    "What is the weather tomorrow?",
    "Who won the world cup in 2018?",
    "How do I bake bread?",
    "What is machine learning?",
]


async def test_entries_per_scope_are_bounded(make_cache: MakeCache) -> None:
    cache = await make_cache(max_entries_per_scope=5)
    for text in DISTINCT:
        await cache.insert(q_chat(cache, text), answer(text))
        await asyncio.sleep(0.002)  # distinct expiry times
    scope = q_chat(cache, RESET).scope
    assert await cache.store.scope_size(scope) == 5
    assert (await cache.stats())["entries"] == 5
    statuses = [(await cache.lookup(q_chat(cache, t))).status for t in DISTINCT]
    assert statuses == ["miss"] * 7 + ["hit-exact"] * 5  # the oldest were evicted
    # another scope is not affected by this one's bound
    await cache.insert(q_chat(cache, RESET, tenant="other"), answer("x"))
    assert await cache.store.scope_size(scope) == 5
    assert (await cache.lookup(q_chat(cache, RESET, tenant="other"))).status == "hit-exact"


async def test_delete_by_id_namespace_and_flush(cache: SemanticCache) -> None:
    faq, docs = CacheControl(namespace="faq"), CacheControl(namespace="docs")
    faq_id = await cache.insert(q_chat(cache, RESET, control=faq), answer("faq"))
    other_id = await cache.insert(
        q_chat(cache, "How do I change my email?", control=faq), answer("f2")
    )
    await cache.insert(q_chat(cache, RESET, control=docs), answer("docs"))
    await cache.insert(q_chat(cache, RESET, tenant="globex", control=faq), answer("globex faq"))
    assert faq_id and other_id
    got = await cache.get(faq_id)
    assert got is not None and got.text == RESET and got.namespace == "faq"

    assert await cache.delete(faq_id) is True
    assert await cache.delete(faq_id) is False
    assert (await cache.lookup(q_chat(cache, RESET, control=faq))).status == "miss"
    assert (
        await cache.lookup(q_chat(cache, "How can I reset my password?", control=faq))
    ).status == "miss"

    assert await cache.delete_namespace("faq") == 2  # other_id and globex's
    assert await cache.get(other_id) is None
    assert (await cache.lookup(q_chat(cache, RESET, tenant="globex", control=faq))).status == "miss"
    assert (await cache.lookup(q_chat(cache, RESET, control=docs))).status == "hit-exact"

    assert await cache.flush() == 1
    assert (await cache.stats())["entries"] == 0
    assert (await cache.lookup(q_chat(cache, RESET, control=docs))).status == "miss"


async def test_warm(cache: SemanticCache) -> None:
    entries: list[dict[str, Any]] = [
        {"messages": [{"role": "user", "content": RESET}], "answer": "Use the link."},
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "How do I change my email?"},
            ],
            "answer": "Settings > Email.",
            "completion_tokens": 4,
        },
        {
            "prompt": "Once upon a time",
            "answer": " there was a cache.",
            "params": {"max_tokens": 8},
        },
    ]
    progress: list[int] = []
    stored = await cache.warm("m1", entries, "acme", "faq", on_progress=progress.append)
    assert stored == 3 and sum(progress) == 3
    faq = CacheControl(namespace="faq")
    hit = await cache.lookup(
        q_chat(cache, "How can I reset my password?", system=None, control=faq)
    )
    assert hit.status == "hit-semantic" and hit.answer is not None
    assert hit.answer.text == "Use the link."
    email = await cache.lookup(
        q_chat(cache, "How do I change my email?", system="Be brief.", control=faq)
    )
    assert email.status == "hit-exact" and email.answer is not None
    assert email.answer.completion_tokens == 4
    prompt = cache.query(
        "completion", {"model": "m1", "prompt": "Once upon a time", "max_tokens": 8}, "acme", faq
    )
    assert prompt is not None and (await cache.lookup(prompt)).status == "hit-exact"
    # warmed entries live in their scope only
    assert (await cache.lookup(q_chat(cache, RESET, system=None))).status == "miss"


async def test_warm_validates_everything_before_storing(cache: SemanticCache) -> None:
    good = {"messages": [{"role": "user", "content": "hi"}], "answer": "hello"}
    bad = {"messages": [{"role": "assistant", "content": "hi"}], "answer": "x"}
    with pytest.raises(ValueError, match="entry 1: not cacheable"):
        await cache.warm("m1", [good, bad], "acme")
    with pytest.raises(ValueError, match="entry 0: answer"):
        await cache.warm("m1", [{"messages": good["messages"], "answer": ""}], "acme")
    with pytest.raises(ValueError, match="namespace"):
        await cache.warm("m1", [good], "acme", "bad:ns")
    assert (await cache.stats())["entries"] == 0


async def test_stats(cache: SemanticCache) -> None:
    await cache.insert(q_chat(cache, RESET), answer("a"))
    await cache.lookup(q_chat(cache, RESET))
    await cache.lookup(q_chat(cache, "How can I reset my password?"))
    await cache.lookup(q_chat(cache, "How do I change my email?"))
    await cache.lookup(q_chat(cache, RESET, control=CacheControl(lookup=False)))
    stats = await cache.stats()
    assert stats["store"] == cache.store.name
    assert (stats["hits"], stats["hits_exact"], stats["hits_semantic"]) == (2, 1, 1)
    assert (stats["misses"], stats["skipped"], stats["bypasses"]) == (1, 1, 0)
    assert stats["hit_ratio"] == pytest.approx(2 / 3)
    assert stats["tokens_saved"] == 2 * (12 + 7)
    assert stats["completion_tokens_saved"] == 14
    assert stats["entries"] == 1


async def test_disabled_cache_bypasses(make_cache: MakeCache) -> None:
    cache = await make_cache(enabled=False)
    q = q_chat(cache, RESET)
    assert await cache.insert(q, answer("a")) is None
    result = await cache.lookup(q)
    assert (result.status, result.reason) == ("bypass", "disabled")
