"""Per-entry learned similarity, on both stores: an entry that failed an audit is no longer
served below its own min_similarity, and the value survives a round trip through the store."""

from __future__ import annotations

import json

import pytest

from gateway.cache import RedisStore, SemanticCache, StoredEntry
from tests.cache.conftest import MakeCache
from tests.cache.helpers import answer, chat, q_chat

QUESTION = "How do I reset my password?"
PARAPHRASE = "how do i reset my password"


async def _warm(
    cache: SemanticCache, text: str = QUESTION, reply: str = "Use the reset link."
) -> str:
    assert await cache.warm("m1", [{"messages": chat(text)["messages"], "answer": reply}], "acme")
    hit = await cache.lookup(q_chat(cache, text))
    assert hit.status == "hit-exact" and hit.entry_id is not None
    return hit.entry_id


async def test_a_failed_audit_stops_the_entry_being_served_below_its_learned_similarity(
    cache: SemanticCache,
) -> None:
    entry_id = await _warm(cache)
    served = await cache.lookup(q_chat(cache, PARAPHRASE))
    assert served.status == "hit-semantic" and served.entry_id == entry_id
    assert served.similarity is not None and served.similarity < 1.0

    floor = await cache.record_audit(entry_id, served.similarity, agreed=False)

    assert floor == pytest.approx(min(1.0, served.similarity + cache.config.audit.margin))
    again = await cache.lookup(q_chat(cache, PARAPHRASE))
    assert again.status == "miss"
    exact = await cache.lookup(q_chat(cache, QUESTION))  # the entry itself is still there
    assert exact.status == "hit-exact" and exact.entry_id == entry_id


async def test_the_policy_serves_another_entry_when_the_nearest_was_raised(
    cache: SemanticCache,
) -> None:
    wrong = await _warm(cache, QUESTION, "Bananas are purple.")
    right = await _warm(cache, "How can I reset my password?", "Use the reset link.")
    first = await cache.lookup(q_chat(cache, PARAPHRASE))
    assert first.status == "hit-semantic" and first.entry_id == wrong  # the nearest one
    assert first.similarity is not None
    await cache.record_audit(wrong, first.similarity, agreed=False)

    second = await cache.lookup(q_chat(cache, PARAPHRASE))

    assert second.status == "hit-semantic" and second.entry_id == right
    assert second.answer is not None and second.answer.text == "Use the reset link."


async def test_an_agreeing_audit_or_a_floor_below_the_query_keeps_serving(
    cache: SemanticCache,
) -> None:
    entry_id = await _warm(cache)
    served = await cache.lookup(q_chat(cache, PARAPHRASE))
    assert served.similarity is not None
    assert await cache.record_audit(entry_id, served.similarity, agreed=True) is None
    assert await cache.store.raise_min_similarity(entry_id, served.similarity - 0.001)
    still = await cache.lookup(q_chat(cache, PARAPHRASE))
    assert still.status == "hit-semantic" and still.entry_id == entry_id


async def test_min_similarity_round_trips_through_the_store_and_never_goes_down(
    make_cache: MakeCache, store_kind: str
) -> None:
    cache = await make_cache()
    entry_id = await _warm(cache)
    assert (await cache.get(entry_id)).min_similarity == 0.0  # type: ignore[union-attr]

    assert await cache.store.raise_min_similarity(entry_id, 0.97)
    assert await cache.store.raise_min_similarity(entry_id, 0.5)  # lower: ignored

    stored = await cache.get(entry_id)
    assert stored is not None and stored.min_similarity == pytest.approx(0.97)
    exact = await cache.store.get_exact(stored.scope, stored.exact_key)
    assert exact is not None and exact.min_similarity == pytest.approx(0.97)
    vector = await cache.embedder.embed(PARAPHRASE)
    [neighbour] = await cache.store.search(stored.scope, vector, 4)
    assert neighbour.entry.min_similarity == pytest.approx(0.97)
    if store_kind == "redis":  # another connection (another replica) reads the same value
        assert isinstance(cache.store, RedisStore)
        other = RedisStore(cache.config.redis_url or "", prefix=cache.config.key_prefix)
        try:
            fetched = await other.get(entry_id)
            assert fetched is not None and fetched.min_similarity == pytest.approx(0.97)
        finally:
            await other.close()


async def test_raising_a_missing_entry_is_false_and_record_audit_never_raises(
    cache: SemanticCache,
) -> None:
    assert await cache.store.raise_min_similarity("no-such-entry", 0.99) is False
    assert await cache.record_audit("no-such-entry", 0.97, agreed=False) is None


async def test_a_warm_up_replaces_a_raised_entry_with_a_fresh_one(cache: SemanticCache) -> None:
    entry_id = await _warm(cache, reply="Bananas are purple.")
    served = await cache.lookup(q_chat(cache, PARAPHRASE))
    assert served.similarity is not None
    await cache.record_audit(entry_id, served.similarity, agreed=False)
    await _warm(cache, reply="Use the reset link.")  # the curated fix
    fixed = await cache.lookup(q_chat(cache, PARAPHRASE))
    assert fixed.status == "hit-semantic" and fixed.answer is not None
    assert fixed.answer.text == "Use the reset link."


def test_entries_stored_before_audits_existed_are_still_readable() -> None:
    entry = StoredEntry(
        entry_id="e1",
        scope="default:abc",
        exact_key="k",
        text="hi",
        answer=answer("hello"),
        created_at=1.0,
        expires_at=2.0,
        min_similarity=0.96,
    )
    data = json.loads(entry.to_json())
    assert StoredEntry.from_json(entry.to_json()) == entry
    del data["min_similarity"]
    old = StoredEntry.from_json(json.dumps(data))
    assert old.min_similarity == 0.0 and old.answer == entry.answer
