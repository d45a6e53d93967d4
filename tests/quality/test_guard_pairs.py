"""The guard on the labelled set (tests/quality/data/guard_pairs.csv): written for this project,
not from Banking77; 102 opposite pairs over six kinds of difference and 92 paraphrase pairs, in
nine support domains, with the real embedder and the gateway's lookup path."""

from __future__ import annotations

from collections import Counter
from typing import Literal

import pytest

from gateway.cache import CacheConfig, Embedder, EmbedderConfig
from gateway.cache.guard import Guard
from load.bench_guard import read_pairs, served

PAIRS = read_pairs()


def test_the_set_is_large_and_varied() -> None:
    labels = Counter(p.label for p in PAIRS)
    assert labels["opposite"] >= 60 and labels["paraphrase"] >= 60
    assert {p.category for p in PAIRS if p.label == "opposite"} == {
        "negation",
        "antonym",
        "number",
        "currency",
        "unit",
        "direction",
    }


def test_the_guard_alone_refuses_every_opposite_and_few_paraphrases() -> None:
    guard = Guard()
    passed = [
        p for p in PAIRS if p.label == "opposite" and guard.refusal(p.asked, p.stored) is None
    ]
    assert passed == []
    paraphrases = [p for p in PAIRS if p.label == "paraphrase"]
    refused = [p for p in paraphrases if guard.refusal(p.asked, p.stored) is not None]
    assert len(refused) <= 0.05 * len(paraphrases), refused


@pytest.mark.parametrize("policy", ["threshold", "consensus"])
async def test_no_opposite_is_served_and_paraphrases_are(
    policy: Literal["threshold", "consensus"],
) -> None:
    async with Embedder(EmbedderConfig()) as embedder:
        before, _ = await served(PAIRS, CacheConfig(policy=policy, guard=False), embedder)
        after, _ = await served(PAIRS, CacheConfig(policy=policy), embedder)
    opposite = [p.label == "opposite" for p in PAIRS]
    served_before = sum(h for h, o in zip(before, opposite, strict=True) if o)
    served_after = sum(h for h, o in zip(after, opposite, strict=True) if o)
    assert served_before >= 30  # without the guard, the default threshold serves many of them
    assert served_after == 0
    kept_before = sum(h for h, o in zip(before, opposite, strict=True) if not o)
    kept_after = sum(h for h, o in zip(after, opposite, strict=True) if not o)
    assert kept_after >= 0.95 * kept_before
