"""Single-flight with broadcast: identical concurrent misses make one upstream call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.errors import UpstreamError
from gateway.routing.coalesce import Coalescer, FlightAbandoned, Producer
from gateway.routing.upstream import Upstream
from tests.routing.helpers import CHAT, chat, eventually, routed
from tests.support.stub_engines import MODEL, running_fault_engine


def stream_producer(upstream: Upstream, body: dict[str, Any]) -> Producer[bytes]:
    async def produce(meta: dict[str, Any]) -> AsyncIterator[bytes]:
        opened = await upstream.stream(CHAT, {**body, "stream": True}, MODEL)
        meta["backend"] = opened.backend.url
        try:
            async for event in opened.events():
                yield event
        finally:
            await opened.aclose()

    return produce


async def test_twenty_identical_streams_make_one_upstream_call() -> None:
    with running_fault_engine(delay_s=0.1, chunk_delay_s=0.06) as engine:
        async with routed([engine.url]) as r:
            coalescer: Coalescer[bytes] = Coalescer()
            body = chat("same question")

            async def waiter(delay: float) -> tuple[list[bytes], bool, str]:
                await asyncio.sleep(delay)  # the later ones join after the first events
                async with coalescer.join(
                    ("stream", "same"), stream_producer(r.upstream, body)
                ) as sub:
                    await sub.wait_started()
                    return [e async for e in sub], sub.is_leader, sub.meta["backend"]

            results = await asyncio.gather(*(waiter(0.01 * i) for i in range(20)))
    assert engine.calls == 1
    events = [r[0] for r in results]
    assert all(e == events[0] for e in events) and events[0][-1] == b"[DONE]"
    assert len(events[0]) == 6  # five words and [DONE]
    assert sum(leader for _, leader, _ in results) == 1
    assert {backend for _, _, backend in results} == {engine.url}
    assert coalescer.flights_started == 1 and coalescer.joins_coalesced == 19
    assert coalescer.in_flight == 0  # a finished flight is forgotten


async def test_twenty_identical_non_streaming_requests_make_one_upstream_call() -> None:
    with running_fault_engine(delay_s=0.3) as engine:
        async with routed([engine.url]) as r:
            coalescer: Coalescer[dict[str, Any]] = Coalescer()

            async def call(meta: dict[str, Any]) -> dict[str, Any]:
                return await r.upstream.complete(CHAT, chat("same"), MODEL)

            answers = await asyncio.gather(
                *(coalescer.call(("json", "same"), call) for _ in range(20))
            )
            assert engine.calls == 1
            assert all(a == answers[0] for a in answers)
            assert answers[0]["choices"][0]["message"]["content"] == "Hello from the stub."
            await coalescer.call(("json", "same"), call)  # after the flight: a new call
            assert engine.calls == 2


async def test_different_keys_do_not_coalesce() -> None:
    coalescer: Coalescer[int] = Coalescer()
    calls: list[str] = []

    async def work(key: str) -> int:
        async def run(_: dict[str, Any]) -> int:
            calls.append(key)
            await asyncio.sleep(0.05)
            return len(calls)

        return await coalescer.call(key, run)

    await asyncio.gather(work("a"), work("b"), work("a"))
    assert sorted(calls) == ["a", "b"]


async def test_leader_failure_reaches_every_follower() -> None:
    with running_fault_engine(mode="reject", delay_s=0.2) as engine:
        async with routed([engine.url]) as r:
            coalescer: Coalescer[bytes] = Coalescer()

            async def waiter() -> BaseException | None:
                sub = coalescer.join("k", stream_producer(r.upstream, chat()))
                try:
                    await sub.wait_started()
                except UpstreamError as exc:
                    return exc
                finally:
                    await sub.aclose()
                return None

            errors = await asyncio.gather(*(waiter() for _ in range(5)))
    assert engine.calls == 1
    assert all(isinstance(e, UpstreamError) and e.status_code == 400 for e in errors)
    assert len({id(e) for e in errors}) == 1  # the same error


async def test_late_joiner_gets_the_events_so_far_then_the_live_ones() -> None:
    coalescer: Coalescer[int] = Coalescer()
    go_on = asyncio.Event()

    async def produce(_: dict[str, Any]) -> AsyncIterator[int]:
        yield 1
        yield 2
        await go_on.wait()
        yield 3

    first = coalescer.join("k", produce)
    assert [await anext(first), await anext(first)] == [1, 2]
    late = coalescer.join("k", produce)
    assert not late.is_leader
    assert [await anext(late), await anext(late)] == [1, 2]
    go_on.set()
    assert [e async for e in late] == [3]
    assert [e async for e in first] == [3]
    await first.aclose()
    await late.aclose()


async def test_a_follower_leaving_does_not_cancel_the_leader_but_the_last_one_does() -> None:
    with running_fault_engine(delay_s=0.3) as engine:
        async with routed([engine.url]) as r:
            coalescer: Coalescer[bytes] = Coalescer()
            producer = stream_producer(r.upstream, chat())
            leader = coalescer.join("k", producer)
            follower = coalescer.join("k", producer)
            quitter = asyncio.create_task(follower.wait_started())
            await asyncio.sleep(0.05)
            quitter.cancel()  # the follower's client disconnects
            await follower.aclose()
            events = [e async for e in leader]  # the leader still gets everything
            assert events[-1] == b"[DONE]"
            await leader.aclose()

            # now every subscriber leaves while the engine is still working
            a = coalescer.join("k2", stream_producer(r.upstream, chat("other")))
            b = coalescer.join("k2", stream_producer(r.upstream, chat("other")))
            await asyncio.sleep(0.1)  # the request is at the engine
            assert r.pool.backends[0].in_flight == 1
            await a.aclose()
            await b.aclose()
            await eventually(lambda: r.pool.backends[0].in_flight == 0, timeout_s=2)
            assert coalescer.in_flight == 0
            assert a.flight.done and isinstance(a.flight.error, FlightAbandoned)
            with pytest.raises(FlightAbandoned):
                await anext(a)


async def test_a_lingering_flight_is_replayed_to_late_joiners_then_forgotten() -> None:
    # The gap between an answer's end and its cache insert: a request arriving then misses the
    # cache, and would call the engine again if the flight were already forgotten.
    coalescer: Coalescer[int] = Coalescer()
    calls = 0

    async def produce(_: dict[str, Any]) -> AsyncIterator[int]:
        nonlocal calls
        calls += 1
        yield calls

    async def ask(linger: float = 0.0) -> tuple[list[int], bool]:
        async with coalescer.join("k", produce) as sub:
            events = [e async for e in sub]
            if linger:
                coalescer.linger(sub.flight, linger)
            return events, sub.is_leader

    assert await ask() == ([1], True)
    assert coalescer.in_flight == 0  # not asked to linger: forgotten at once
    assert await ask(linger=0.3) == ([2], True)
    assert await ask() == ([2], False)  # replayed, no new call
    assert coalescer.in_flight == 1
    await eventually(lambda: coalescer.in_flight == 0, timeout_s=2)
    assert await ask() == ([3], True)  # after the linger: a new flight


async def test_a_failed_flight_does_not_linger() -> None:
    coalescer: Coalescer[int] = Coalescer()
    go_on = asyncio.Event()

    async def fail(_: dict[str, Any]) -> AsyncIterator[int]:
        yield 1
        await go_on.wait()
        raise ValueError("engine said no")

    sub = coalescer.join("k", fail)
    assert await anext(sub) == 1
    coalescer.linger(sub.flight, 5.0)  # asked while it still runs
    go_on.set()
    with pytest.raises(ValueError):
        await anext(sub)
    await sub.aclose()
    assert coalescer.in_flight == 0
    coalescer.linger(sub.flight, 5.0)  # and after it failed
    assert coalescer.in_flight == 0
