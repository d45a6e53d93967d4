"""SharedFlights against a real Redis 8: one leader per key across "replicas" (clients),
followers replay its answer, a dead leader's lease expires and a follower takes over, and a
Redis that cannot be reached means leading alone, never an error."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.routing.coalesce import Coalescer
from gateway.routing.config import SharedFlightConfig
from gateway.routing.shared_flight import BYTES, SharedFlights, SharedFlightsCollector, flight_key
from tests.support.servers import free_port

CONFIG = SharedFlightConfig(lease_ms=600, answer_ttl_s=5, redis_timeout_s=2)


def replica(url: str, prefix: str, config: SharedFlightConfig = CONFIG) -> SharedFlights:
    return SharedFlights(redis.Redis.from_url(url), config, prefix=prefix)


class Engine:
    """Counts calls; each answers ``words`` one by one, ``delay_s`` apart."""

    def __init__(self, delay_s: float = 0.05) -> None:
        self.calls = 0
        self.delay_s = delay_s

    async def answer(self, meta: dict[str, Any]) -> AsyncIterator[bytes]:
        self.calls += 1
        meta["backend"] = f"engine-call-{self.calls}"
        for word in (b"one", b"two", b"three"):
            await asyncio.sleep(self.delay_s)
            yield word


async def collect(flights: SharedFlights, key: str, engine: Engine, **kw: Any) -> list[bytes]:
    meta: dict[str, Any] = {}
    return [e async for e in flights.wrap(key, engine.answer, BYTES, **kw)(meta)]


def test_identical_flights_on_three_replicas_make_one_call(redis_server: str) -> None:
    async def main() -> None:
        prefix, key = uuid.uuid4().hex, flight_key(["tenant", "scope", "hi"])
        steady = CONFIG.model_copy(update={"lease_ms": 3000})  # a loop stall must not expire it
        replicas = [replica(redis_server, prefix, steady) for _ in range(3)]
        engine = Engine()
        answers = await asyncio.gather(*(collect(r, key, engine) for r in replicas))
        assert engine.calls == 1
        assert answers == [[b"one", b"two", b"three"]] * 3
        assert sum(r.led for r in replicas) == 1
        assert sum(r.followed for r in replicas) == 2

    asyncio.run(main())


def test_a_late_joiner_takes_only_a_reusable_answer(redis_server: str) -> None:
    async def main() -> None:
        prefix = uuid.uuid4().hex
        a, b = replica(redis_server, prefix), replica(redis_server, prefix)
        engine = Engine(delay_s=0)
        await collect(a, "kept", engine, reusable=lambda _: True)
        await collect(a, "not-kept", engine, reusable=lambda _: False)
        await asyncio.sleep(0.1)  # the leader's answer is written after its last event
        assert await collect(b, "kept", engine) == [b"one", b"two", b"three"]
        assert engine.calls == 2  # served from the stored answer
        await collect(b, "not-kept", engine)
        assert engine.calls == 3  # e.g. an answer the cache would refuse: asked again

    asyncio.run(main())


def test_a_follower_takes_over_from_a_leader_that_died(redis_server: str) -> None:
    async def main() -> None:
        prefix, key = uuid.uuid4().hex, "dies"
        follower = replica(redis_server, prefix)
        # A leader that died holding the lease: nobody renews it, finishes or releases it.
        lease = follower._names(key)[0]
        await follower._r.set(lease, "dead-leader", px=CONFIG.lease_ms)
        engine = Engine(delay_s=0)
        started = time.monotonic()
        assert await collect(follower, key, engine) == [b"one", b"two", b"three"]
        took = time.monotonic() - started
        assert engine.calls == 1 and follower.took_over == 1
        assert CONFIG.lease_ms / 1000 - 0.1 < took < CONFIG.lease_ms / 1000 + 0.5

    asyncio.run(main())


def test_a_live_leader_keeps_its_lease_past_its_first_term(redis_server: str) -> None:
    async def main() -> None:
        prefix = uuid.uuid4().hex
        a, b = replica(redis_server, prefix), replica(redis_server, prefix)
        slow = Engine(delay_s=0.5)  # 1.5 s: over twice the lease, renewed meanwhile
        engine = Engine(delay_s=0)
        leading = asyncio.create_task(collect(a, "slow", slow))
        await asyncio.sleep(0.1)
        assert await collect(b, "slow", engine) == [b"one", b"two", b"three"]
        assert engine.calls == 0 and slow.calls == 1
        await leading

    asyncio.run(main())


def test_a_failed_leader_releases_at_once(redis_server: str) -> None:
    async def main() -> None:
        prefix, key = uuid.uuid4().hex, "fails"
        a, b = replica(redis_server, prefix), replica(redis_server, prefix)

        async def failing(meta: dict[str, Any]) -> AsyncIterator[bytes]:
            await asyncio.sleep(0.2)
            raise RuntimeError("engine said no")
            yield b""  # pragma: no cover

        async def lead_and_fail() -> None:
            try:
                [e async for e in a.wrap(key, failing, BYTES)({})]
            except RuntimeError:
                return
            raise AssertionError("the leader's error must reach its own subscribers")

        engine = Engine(delay_s=0)
        failing_task = asyncio.create_task(lead_and_fail())
        await asyncio.sleep(0.05)
        started = time.monotonic()
        assert await collect(b, key, engine) == [b"one", b"two", b"three"]
        assert time.monotonic() - started < CONFIG.lease_ms / 1000  # no wait for the expiry
        await failing_task

    asyncio.run(main())


def test_redis_down_means_leading_alone() -> None:
    async def main() -> None:
        config = SharedFlightConfig(redis_timeout_s=0.3, retry_s=30)
        dead = replica(f"redis://127.0.0.1:{free_port()}", "x", config)
        engine = Engine(delay_s=0)
        started = time.monotonic()
        assert await collect(dead, "k", engine) == [b"one", b"two", b"three"]
        assert await collect(dead, "k", engine) == [b"one", b"two", b"three"]
        assert engine.calls == 2 and dead.alone == 2
        assert time.monotonic() - started < 1.5  # the second one does not try Redis again
        registry = CollectorRegistry()
        registry.register(SharedFlightsCollector(dead))
        exported = {
            s.labels["role"]: s.value
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for s in family.samples
            if s.name == "gateway_shared_flights_total"
        }
        assert exported == {"led": 0, "took_over": 0, "followed": 0, "alone": 2}

    asyncio.run(main())


def test_an_answer_that_cannot_be_shared_still_reaches_its_own_clients(redis_server: str) -> None:
    def boom(_: list[bytes]) -> bool:
        raise ValueError("an answer the cache cannot read")

    async def main() -> None:
        prefix = uuid.uuid4().hex
        a, b = replica(redis_server, prefix), replica(redis_server, prefix)
        engine = Engine(delay_s=0)
        assert await collect(a, "odd", engine, reusable=boom) == [b"one", b"two", b"three"]
        await asyncio.sleep(0.1)
        assert await collect(b, "odd", engine) == [b"one", b"two", b"three"]
        assert engine.calls == 2  # nothing stored: the next one leads (no wait on a lease)

    asyncio.run(main())


def test_a_flight_cancelled_as_redis_answers_never_reaches_the_engine(redis_server: str) -> None:
    """A subscriber that leaves cancels the flight; with the gateway's client settings (a
    socket_timeout, so redis-py sends through asyncio.wait_for, which on Python 3.11 drops a
    cancel landing as the reply comes in) the lease claim used to return as if not cancelled
    and the flight went on to call the engine, with nobody left to abort it."""

    async def main() -> None:
        client = redis.Redis.from_url(redis_server, socket_timeout=5, socket_connect_timeout=5)
        config = SharedFlightConfig(lease_ms=60_000, redis_timeout_s=5)  # never expires here
        prefix = uuid.uuid4().hex
        flights = SharedFlights(client, config, prefix=prefix)
        coalescer: Coalescer[bytes] = Coalescer()
        reached = 0

        async def engine(meta: dict[str, Any]) -> AsyncIterator[bytes]:
            nonlocal reached
            reached += 1
            await asyncio.sleep(3600)  # only a cancel ends it
            yield b""  # pragma: no cover

        rng = random.Random()
        cancelled: list[asyncio.Task[None]] = []
        for i in range(300):
            sub = coalescer.join(i, flights.wrap(f"k{i}", engine, BYTES))
            await asyncio.sleep(rng.random() * 0.003)  # somewhere in the claim's round trips
            assert sub.flight.task is not None
            cancelled.append(sub.flight.task)
            await sub.aclose()  # the last subscriber left: the flight is cancelled
        _, running = await asyncio.wait(cancelled, timeout=10)
        for task in running:
            task.cancel()
        assert not running, f"{len(running)} of 300 went on after their cancel ({reached} ran)"
        # a lease claimed as the cancel landed is released at once, not left to expire
        deadline = time.monotonic() + 10
        while leases := await client.keys(f"{prefix}:flight:*:lease"):
            assert time.monotonic() < deadline, f"{len(leases)} leases left to expire"
            await asyncio.sleep(0.05)

    asyncio.run(main())


def test_shutdown_releases_the_lease_of_a_cancelled_flight(redis_server: str) -> None:
    """At shutdown the requests in flight are cancelled, then the services drain, then the
    Redis client closes: the cancelled leader's release must land before that, or the other
    replicas' followers wait out its lease (here 30 s) before one takes over."""

    async def main() -> None:
        config = SharedFlightConfig(lease_ms=30_000, answer_ttl_s=5, redis_timeout_s=2)
        prefix, key = uuid.uuid4().hex, "shutdown"
        leader = replica(redis_server, prefix, config)
        lease = leader._names(key)[0]
        slow = Engine(delay_s=3600)
        flight = asyncio.create_task(collect(leader, key, slow))
        while slow.calls == 0:
            await asyncio.sleep(0.01)
        flight.cancel()
        await asyncio.wait([flight])
        await leader.drain()
        await leader._r.aclose()  # what the gateway's lifespan does next
        probe = redis.Redis.from_url(redis_server)
        try:
            assert not await probe.exists(lease)
        finally:
            await probe.aclose()

    asyncio.run(main())
