"""The consensus policy inside SemanticCache (real embedder), on both stores."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal

import pytest

from gateway.cache import CacheConfig, CacheControl, Embedder, SemanticCache, build_cache
from gateway.cache.control import DEFAULT_NAMESPACE

PASSWORD = [
    "How do I reset my password?",
    "I forgot my password, how can I reset it?",
    "How can I reset my password?",
    "I need to reset my password",
    "Reset my password please",
]
EMAIL = ["How do I change my email address?", "How can I change the email on my account?"]
RESET = "Go to Settings > Security > Reset password."
CHANGE = "Go to Settings > Profile > Email."

MakeCache = Callable[..., Awaitable[SemanticCache]]
Policy = Literal["threshold", "consensus"]


@pytest.fixture(params=["memory", "redis"])
async def make_cache(
    request: pytest.FixtureRequest, quality_embedder: Embedder
) -> AsyncIterator[MakeCache]:
    made: list[SemanticCache] = []

    async def make(
        policy: Policy,
        *,
        same_answers: bool = True,
        model_thresholds: dict[str, float] | None = None,
        namespace_thresholds: dict[str, float] | None = None,
    ) -> SemanticCache:
        redis = request.getfixturevalue("redis_server") if request.param == "redis" else None
        config = CacheConfig(
            policy=policy,
            key_prefix=f"q{uuid.uuid4().hex[:12]}",
            store_timeout_s=5.0,
            redis_url=redis,
            model_thresholds=model_thresholds or {},
            namespace_thresholds=namespace_thresholds or {},
        )
        cache = build_cache(config, embedder=quality_embedder)
        await cache.start()
        made.append(cache)
        entries = [
            {
                "messages": [{"role": "user", "content": text}],
                "answer": RESET if same_answers else f"{RESET} ({i})",
            }
            for i, text in enumerate(PASSWORD)
        ]
        entries += [{"messages": [{"role": "user", "content": t}], "answer": CHANGE} for t in EMAIL]
        assert await cache.warm("m1", entries, "acme") == len(entries)
        return cache

    yield make
    for cache in made:
        await cache.flush()
        await cache.close()


async def status(
    cache: SemanticCache, text: str, threshold: float | None = None
) -> tuple[str, str | None]:
    body = {"model": "m1", "messages": [{"role": "user", "content": text}]}
    q = cache.query("chat", body, "acme", CacheControl(threshold=threshold))
    assert q is not None
    result = await cache.lookup(q)
    return result.status, result.answer.text if result.answer else None


# cosine to the five password entries: 0.938, 0.929, 0.925, 0.923, 0.881 (all below 0.95)
AGREEING = "Help me reset my password"


async def test_consensus_hits_where_the_threshold_misses(make_cache: MakeCache) -> None:
    threshold, consensus = await make_cache("threshold"), await make_cache("consensus")
    assert consensus.policy.name == "consensus"
    assert await status(threshold, AGREEING) == ("miss", None)
    assert await status(consensus, AGREEING) == ("hit-semantic", RESET)


async def test_consensus_keeps_misses_that_are_misses(make_cache: MakeCache) -> None:
    consensus = await make_cache("consensus")
    assert (await status(consensus, "How do I reset my email?"))[0] == "miss"
    assert (await status(consensus, "What's the weather like in Paris?"))[0] == "miss"
    assert await status(consensus, PASSWORD[0]) == ("hit-exact", RESET)


async def test_without_shared_answers_consensus_is_the_threshold(make_cache: MakeCache) -> None:
    consensus = await make_cache("consensus", same_answers=False)
    assert (await status(consensus, AGREEING))[0] == "miss"
    status_, answer = await status(consensus, "how do I reset my password")  # cosine ~1
    assert status_ == "hit-semantic" and answer is not None and answer.startswith(RESET)


async def test_a_request_threshold_turns_the_verifier_off(make_cache: MakeCache) -> None:
    consensus = await make_cache("consensus")
    assert (await status(consensus, AGREEING, threshold=0.95))[0] == "miss"
    assert (await status(consensus, AGREEING, threshold=0.9))[0] == "hit-semantic"


async def test_a_configured_model_or_namespace_threshold_is_honoured_exactly(
    make_cache: MakeCache,
) -> None:
    by_model = await make_cache("consensus", model_thresholds={"m1": 0.95})
    by_namespace = await make_cache("consensus", namespace_thresholds={DEFAULT_NAMESPACE: 0.95})
    other_model = await make_cache("consensus", model_thresholds={"m2": 0.95})
    assert (await status(by_model, AGREEING))[0] == "miss"
    assert (await status(by_namespace, AGREEING))[0] == "miss"
    assert await status(other_model, AGREEING) == ("hit-semantic", RESET)
