"""The audit service against a fault-injecting stub engine, with the real cache and embedder:
what it sends, when it skips (never queues), how it compares, what a disagreement changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway.audit import Auditor
from gateway.cache import CacheConfig, CacheControl, Embedder, LookupResult, build_cache
from gateway.cache.config import AuditConfig
from gateway.cache.service import SemanticCache
from gateway.config import BackendConfig, TimeoutConfig
from gateway.routing.admission import Admission
from gateway.routing.backends import BackendPool
from gateway.routing.budget import TokenBudget
from gateway.routing.config import AdmissionConfig, BudgetConfig
from gateway.routing.upstream import Upstream
from tests.support.stub_engines import MODEL, FaultEngine, running_fault_engine

PATH = "/v1/chat/completions"
QUESTION = "How do I reset my password?"
PARAPHRASE = "how do i reset my password"
STUB_ANSWER = "Hello from the stub."  # what the stub engine always answers


@dataclass
class Rig:
    auditor: Auditor
    cache: SemanticCache
    admission: Admission
    engine: FaultEngine


@pytest.fixture(scope="module")
def engine() -> Iterator[FaultEngine]:
    with running_fault_engine() as stub:
        yield stub


@pytest.fixture(autouse=True)
def _reset(engine: FaultEngine) -> None:
    engine.mode, engine.delay_s, engine.bodies = "ok", 0.0, []


@asynccontextmanager
async def rig(
    engine: FaultEngine, embedder: Embedder, *, max_in_flight: int = 4, **audit: Any
) -> AsyncIterator[Rig]:
    config = AuditConfig(**{"sample_rate": 1.0, **audit})
    async with httpx.AsyncClient() as client:
        backends = [BackendConfig(url=engine.url, max_in_flight=max_in_flight)]
        async with BackendPool(backends, client, probe_interval_s=60) as pool:
            cache = build_cache(CacheConfig(audit=config), embedder=embedder)
            async with cache:
                admission = Admission(pool.capacity, AdmissionConfig(max_wait_s=5))
                budget = TokenBudget(BudgetConfig(max_tokens=16), pool, client)
                async with Upstream(pool, TimeoutConfig()) as upstream:
                    auditor = Auditor(cache, upstream, admission, pool, budget, config)
                    yield Rig(auditor, cache, admission, engine)


def body(text: str = PARAPHRASE, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}


async def served_hit(cache: SemanticCache, answer: str) -> LookupResult:
    """Warms QUESTION with ``answer`` and returns the semantic hit PARAPHRASE gets."""
    await cache.warm(MODEL, [{"messages": body(QUESTION)["messages"], "answer": answer}], "t")
    result = await lookup(cache)
    assert result.status == "hit-semantic"
    return result


async def lookup(cache: SemanticCache) -> LookupResult:
    query = cache.query("chat", body(), "t", CacheControl())
    assert query is not None
    return await cache.lookup(query)


async def test_a_wrong_answer_is_disagreed_and_its_entry_no_longer_served(
    engine: FaultEngine, embedder: Embedder
) -> None:
    async with rig(engine, embedder) as r:
        hit = await served_hit(r.cache, "Bananas are purple and grow under the sea.")
        sent = body(stream=True, stream_options={"include_usage": True}, max_tokens=500)
        sent["cache"] = {"threshold": 0.9}

        assert await r.auditor.run("chat", PATH, sent, hit) == "disagreed"

        # The miss path's body: budget clamp applied, no cache extension, not streamed.
        [request] = engine.bodies
        assert request["stream"] is False and "stream_options" not in request
        assert "cache" not in request and request["max_tokens"] == 16
        assert request["messages"] == sent["messages"]
        stats = r.auditor.stats()
        assert stats["disagreed"] == 1 and stats["agreed"] == 0 and stats["entries_raised"] == 1
        assert stats["agreement_rate"] == 0.0 and stats["agreement_high"] < 0.8
        entry = await r.cache.get(hit.entry_id or "")
        assert entry is not None and hit.similarity is not None
        assert entry.min_similarity == pytest.approx(min(1.0, hit.similarity + 0.01))
        assert (await lookup(r.cache)).status == "miss"


@pytest.mark.parametrize("served", ["hello  FROM the stub.", "Hello from the stub!"])
async def test_the_same_answer_up_to_case_space_or_close_meaning_agrees(
    engine: FaultEngine, embedder: Embedder, served: str
) -> None:
    async with rig(engine, embedder) as r:
        hit = await served_hit(r.cache, served)
        assert await r.auditor.run("chat", PATH, body(), hit) == "agreed"
        assert r.auditor.stats()["agreement_rate"] == 1.0
        assert (await lookup(r.cache)).status == "hit-semantic"  # still served


async def test_the_agree_threshold_decides_a_close_answer(
    engine: FaultEngine, embedder: Embedder
) -> None:
    async with rig(engine, embedder, agree=1.0) as r:  # only the same text agrees
        hit = await served_hit(r.cache, "Hello from the stub!")
        assert await r.auditor.run("chat", PATH, body(), hit) == "disagreed"


async def test_no_free_slot_skips_without_queueing_or_calling_an_engine(
    engine: FaultEngine, embedder: Embedder
) -> None:
    async with rig(engine, embedder, max_in_flight=1) as r:
        hit = await served_hit(r.cache, "Bananas are purple.")
        async with r.admission.slot(MODEL):  # a request holds the only slot
            started = asyncio.get_running_loop().time()
            assert await r.auditor.run("chat", PATH, body(), hit) == "skipped"
            assert asyncio.get_running_loop().time() - started < 1.0  # did not wait
            assert r.admission.queue_depth == 0
        assert engine.bodies == []
        assert r.auditor.stats()["skipped"] == 1 and r.auditor.stats()["audited"] == 0
        assert (await lookup(r.cache)).status == "hit-semantic"  # no verdict: unchanged


async def test_a_request_waiting_for_a_slot_goes_first(
    engine: FaultEngine, embedder: Embedder
) -> None:
    async with rig(engine, embedder, max_in_flight=1) as r:
        hit = await served_hit(r.cache, "Bananas are purple.")
        release = asyncio.Event()

        async def user_request() -> None:
            async with r.admission.slot(MODEL):
                await release.wait()

        holder = asyncio.create_task(user_request())
        await asyncio.sleep(0.01)
        waiter = asyncio.create_task(user_request())  # queued behind the holder
        await asyncio.sleep(0.01)
        assert r.admission.queue_depth == 1
        assert await r.auditor.run("chat", PATH, body(), hit) == "skipped"
        release.set()
        await asyncio.gather(holder, waiter)
        assert engine.bodies == []


async def test_at_most_max_concurrent_audits_run(engine: FaultEngine, embedder: Embedder) -> None:
    async with rig(engine, embedder, max_concurrent=1) as r:
        hit = await served_hit(r.cache, STUB_ANSWER)
        engine.delay_s = 0.3
        outcomes = await asyncio.gather(*(r.auditor.run("chat", PATH, body(), hit) for _ in "ab"))
        assert sorted(outcomes) == ["agreed", "skipped"]
        assert len(engine.bodies) == 1


async def test_an_engine_error_is_a_failure_not_a_verdict(
    engine: FaultEngine, embedder: Embedder
) -> None:
    async with rig(engine, embedder) as r:
        hit = await served_hit(r.cache, "Bananas are purple.")
        engine.mode = "reject"  # a 400: not retried
        assert await r.auditor.run("chat", PATH, body(), hit) == "failed"
        stats = r.auditor.stats()
        assert stats["failed"] == 1 and stats["audited"] == 0 and stats["agreement_rate"] is None
        assert (await lookup(r.cache)).status == "hit-semantic"


async def test_only_a_sample_of_semantic_hits_is_audited(
    engine: FaultEngine, embedder: Embedder
) -> None:
    async with rig(engine, embedder, sample_rate=0.25, max_per_minute=None) as r:
        draws = iter([0.1, 0.3, 0.9, 0.2])
        r.auditor._sample = lambda: next(draws)
        hit = await served_hit(r.cache, "Bananas are purple.")
        assert [r.auditor.wants(hit) for _ in range(4)] == [True, False, False, True]
        exact = LookupResult("hit-exact", answer=hit.answer, entry_id=hit.entry_id)
        r.auditor._sample = lambda: 0.0
        assert not r.auditor.wants(exact) and not r.auditor.wants(LookupResult("miss"))


async def test_at_most_max_per_minute_audits_begin_whatever_the_hit_rate(
    engine: FaultEngine, embedder: Embedder
) -> None:
    async with rig(engine, embedder, max_per_minute=12) as r:  # one per 5 s
        now = [100.0]
        r.auditor._clock = lambda: now[0]
        hit = await served_hit(r.cache, "Bananas are purple.")
        wanted = []
        for _ in range(8):  # every hit is sampled (sample_rate 1), one a second
            wanted.append(r.auditor.wants(hit))
            now[0] += 1.0
        assert wanted == [True, False, False, False, False, True, False, False]
        stats = r.auditor.stats()
        assert stats["capped"] == 6 and stats["max_per_minute"] == 12
        assert not r.auditor.wants(LookupResult("miss"))
        assert r.auditor.stats()["capped"] == 6  # only sampled semantic hits count as capped
