"""The guard in the cache's hit decision, on both stores, with the real embedder.

Each opposite pair below is served the other's answer with the guard off (asserted, so these
tests fail without the guard); cosines measured with all-MiniLM-L6-v2.
"""

from __future__ import annotations

import pytest

from gateway.cache import SemanticCache
from tests.cache.conftest import MakeCache
from tests.cache.helpers import answer, q_chat

OPPOSITES = [
    (
        "Can I transfer money to a US account?",
        "Can I transfer money from a US account?",
        "opposite",
    ),  # 0.995
    (
        "What's the exchange rate for USD to EUR?",
        "What's the exchange rate for EUR to USD?",
        "direction",
    ),  # 0.996
    (
        "My card expires in 2026, will I get a new one?",
        "My card expires in 2028, will I get a new one?",
        "number",
    ),  # 0.981
    (
        "Is there a fee for transfers over 500 euros?",
        "Is there a fee for transfers over 5000 euros?",
        "number",
    ),  # 0.961
    (
        "Is contactless payment enabled on my card?",
        "Is contactless payment disabled on my card?",
        "opposite",
    ),  # 0.958
]


@pytest.mark.parametrize("policy", ["threshold", "consensus"])
@pytest.mark.parametrize(("stored", "asked", "reason"), OPPOSITES)
async def test_the_opposite_question_is_a_miss(
    make_cache: MakeCache, policy: str, stored: str, asked: str, reason: str
) -> None:
    unguarded = await make_cache(policy=policy, guard=False)
    guarded = await make_cache(policy=policy)
    for cache in (unguarded, guarded):
        await cache.insert(q_chat(cache, stored), answer(f"answer to: {stored}"))
    assert (await unguarded.lookup(q_chat(unguarded, asked))).status == "hit-semantic"
    result = await guarded.lookup(q_chat(guarded, asked))
    assert result.status == "miss"
    assert result.guard == reason
    stats = await guarded.stats()
    assert stats["guard_refusals"] == {reason: 1}
    assert stats["misses"] == 1


async def test_a_lower_ranked_candidate_that_passes_is_served(cache: SemanticCache) -> None:
    await cache.insert(q_chat(cache, "Can I transfer money to a US account?"), answer("to"))
    # 0.973 to the question asked, below the refused entry's 0.995:
    await cache.insert(
        q_chat(cache, "Is it possible to transfer money from a US account?"), answer("from")
    )
    result = await cache.lookup(q_chat(cache, "Can I transfer money from a US account?"))
    assert result.status == "hit-semantic"
    assert result.answer is not None and result.answer.text == "from"
    assert result.guard == "opposite"  # the nearest entry was refused, the next one served
    assert result.similarity is not None and 0.95 <= result.similarity < 0.99


async def test_paraphrases_are_still_served(cache: SemanticCache) -> None:
    await cache.insert(q_chat(cache, "How do I reset my password?"), answer("reset"))
    await cache.insert(q_chat(cache, "I can't log in to my account"), answer("login"))
    for asked, expected in [
        ("How can I reset my password?", "reset"),
        ("I cannot log in to my account", "login"),
    ]:
        result = await cache.lookup(q_chat(cache, asked))
        assert result.status == "hit-semantic", asked
        assert result.answer is not None and result.answer.text == expected
        assert result.guard is None


async def test_a_consensus_of_the_opposite_answer_is_refused(make_cache: MakeCache) -> None:
    """A warmed FAQ holds several phrasings of "enable"; "disable" must not get their answer,
    however many of them agree, nor through a phrasing that the guard's pairs do not catch."""
    enable = "Go to Settings > Card > Contactless and switch it on."
    phrasings = [
        "How do I enable contactless payments on my card?",
        "How can I enable contactless payments on my card?",
        "Enable contactless payments on my card",
        "How do I switch on contactless payments on my card?",
        "how to enable contactless payments on my card",
    ]
    asked = "How do I disable contactless payments on my card?"
    unguarded = await make_cache(guard=False, threshold=0.9)
    guarded = await make_cache(threshold=0.9)
    for cache in (unguarded, guarded):
        for text in phrasings:
            await cache.insert(q_chat(cache, text), answer(enable))
    assert (await unguarded.lookup(q_chat(unguarded, asked))).status == "hit-semantic"
    result = await guarded.lookup(q_chat(guarded, asked))
    assert result.status == "miss"
    assert result.guard == "opposite"
