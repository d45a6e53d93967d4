"""Backpressure: bounded in-flight per engine, a bounded queue with a deadline, 429s."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.errors import RateLimited
from gateway.routing.admission import Admission
from gateway.routing.config import AdmissionConfig, BalancerConfig, RoutingConfig
from gateway.routing.errors import QueueFull, QueueTimeout
from tests.routing.helpers import CHAT, chat, routed
from tests.support.stub_engines import MODEL, running_fault_engine


async def hold(
    admission: Admission, model: str, release: asyncio.Event, order: list[str], tag: str
) -> None:
    async with admission.slot(model):
        order.append(tag)
        await release.wait()


async def test_slots_queue_fifo_and_reject_when_the_queue_is_full() -> None:
    admission = Admission(lambda _: 2, AdmissionConfig(queue_size=2, max_wait_s=5))
    release = asyncio.Event()
    order: list[str] = []
    tasks = [asyncio.create_task(hold(admission, "m", release, order, t)) for t in "abcd"]
    await asyncio.sleep(0.05)
    assert order == ["a", "b"] and admission.in_flight == 2 and admission.queue_depth == 2
    with pytest.raises(QueueFull) as full:
        async with admission.slot("m"):
            pass
    assert full.value.status_code == 429 and int(full.value.headers()["Retry-After"]) >= 1
    assert full.value.body()["error"]["type"] == "rate_limit_error"
    release.set()
    await asyncio.gather(*tasks)
    assert order == ["a", "b", "c", "d"]  # queued ones in arrival order
    assert admission.in_flight == 0 and admission.queue_depth == 0
    assert admission.stats()["rejected"] == 1


async def test_a_wait_past_the_deadline_is_a_429() -> None:
    admission = Admission(lambda _: 1, AdmissionConfig(queue_size=10, max_wait_s=0.2))
    async with admission.slot("m"):
        started = time.perf_counter()
        with pytest.raises(QueueTimeout) as late:
            async with admission.slot("m"):
                pass
        assert 0.2 <= time.perf_counter() - started < 0.6
        assert "Retry-After" in late.value.headers()
        assert admission.queue_depth == 0


async def test_a_cancelled_waiter_leaves_the_queue_and_models_do_not_block_each_other() -> None:
    admission = Admission(lambda m: 1 if m == "busy" else 5, AdmissionConfig(max_wait_s=5))
    async with admission.slot("busy"):
        waiter = asyncio.create_task(_enter(admission, "busy"))
        await asyncio.sleep(0.05)
        assert admission.queue_depth == 1
        async with admission.slot("other"):  # another model's capacity is free: no wait
            pass
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert admission.queue_depth == 0
    assert admission.in_flight == 0


async def _enter(admission: Admission, model: str) -> None:
    async with admission.slot(model):
        pass


async def test_capacity_that_grows_wakes_waiters_without_a_release() -> None:
    capacity = {"m": 0}
    admission = Admission(lambda m: capacity[m], AdmissionConfig(max_wait_s=3))
    async with admission.slot("m"):  # 0 = no routable engine: admitted, upstream answers 503
        pass
    capacity["m"] = 1
    async with admission.slot("m"):
        capacity["m"] = 1
        waiter = asyncio.create_task(_enter(admission, "m"))
        await asyncio.sleep(0.05)
        capacity["m"] = 2  # an engine came back
        await asyncio.wait_for(waiter, timeout=1)


async def test_overload_gives_429s_and_admitted_latency_stays_bounded() -> None:
    """2 engines x 2 slots, 4 may queue for 0.5 s, each request takes 0.2 s; 40 arrive at once."""
    routing = RoutingConfig(
        admission=AdmissionConfig(queue_size=4, max_wait_s=0.5),
        balancer=BalancerConfig(scrape_metrics=False),
    )
    with running_fault_engine(delay_s=0.2) as one, running_fault_engine(delay_s=0.2) as two:
        async with routed([one.url, two.url], routing=routing, max_in_flight=2) as r:
            admission = Admission(r.pool.capacity, routing.admission)
            assert r.pool.capacity(MODEL) == 4

            async def request(i: int) -> tuple[str, float, str | None]:
                started = time.perf_counter()
                try:
                    async with admission.slot(MODEL):
                        waited = time.perf_counter() - started
                        await r.upstream.complete(CHAT, chat(f"q{i}"), MODEL)
                    return "ok", waited, None
                except RateLimited as exc:
                    return "429", time.perf_counter() - started, exc.headers()["Retry-After"]

            results = await asyncio.gather(*(request(i) for i in range(40)))
    waits = [waited for status, waited, _ in results if status == "ok"]
    rejected = [(took, retry) for status, took, retry in results if status == "429"]
    assert 8 <= len(waits) <= 16 and len(rejected) >= 24
    # What admission bounds is the wait for a slot (the engine's own time is the engine's):
    # the queue deadline plus slack for a busy event loop.
    assert max(waits) < 0.5 + 0.4
    assert all(took < 0.8 and int(retry or 0) >= 1 for took, retry in rejected)
    assert one.peak_in_flight <= 2 and two.peak_in_flight <= 2  # per-engine bound held


async def test_a_spare_slot_is_taken_only_when_free_now_and_never_queues() -> None:
    """Background work (cache audits) gets a slot only if no request would wait for it."""
    capacity = {"m": 2}
    admission = Admission(lambda model: capacity.get(model, 0), AdmissionConfig(max_wait_s=5))
    async with admission.spare_slot("m") as ticket:
        assert ticket is not None and admission.in_flight == 1  # held like a request
    assert admission.in_flight == 0
    async with admission.spare_slot("other") as ticket:
        assert ticket is None  # no routable engine for it
    release = asyncio.Event()
    order: list[str] = []
    tasks = [asyncio.create_task(hold(admission, "m", release, order, t)) for t in "ab"]
    await asyncio.sleep(0.02)
    async with admission.spare_slot("m") as ticket:
        assert ticket is None and admission.queue_depth == 0  # full: no slot, no queueing
    waiting = asyncio.create_task(hold(admission, "m", release, order, "c"))
    await asyncio.sleep(0.02)
    capacity["m"] = 3  # room again, but a request is waiting: it goes first
    async with admission.spare_slot("m") as ticket:
        assert ticket is None
    release.set()
    await asyncio.gather(*tasks, waiting)
    assert order == ["a", "b", "c"] and admission.in_flight == 0
