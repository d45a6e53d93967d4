"""Failover before the first byte, never after; breakers fed by real request outcomes."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.config import TimeoutConfig
from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.routing.breaker import BreakerState
from gateway.routing.config import BalancerConfig, BreakerConfig, RetryConfig, RoutingConfig
from gateway.routing.errors import EnginesUnavailable
from gateway.routing.upstream import StreamInterrupted, Upstream, UpstreamResponse
from tests.routing.helpers import CHAT, chat, eventually, routed
from tests.support.servers import free_port
from tests.support.stub_engines import MODEL, fault_engine_process, running_fault_engine

LEAST_LOADED = BalancerConfig(strategy="least_loaded", scrape_metrics=False)


async def drain(upstream: Upstream, body: dict[str, object]) -> list[bytes]:
    opened = await upstream.stream(CHAT, {**body, "stream": True}, MODEL)
    try:
        return [event async for event in opened.events()]
    finally:
        await opened.aclose()


async def test_engine_killed_under_load_no_client_sees_a_5xx() -> None:
    """Two engines under steady concurrent load; one is SIGKILLed mid-way. Every non-streaming
    request succeeds; a stream either completes or (only if it had started on the killed
    engine) ends with StreamInterrupted, never a 5xx."""
    routing = RoutingConfig(balancer=LEAST_LOADED)
    with (
        fault_engine_process(delay_s=0.05) as doomed,
        fault_engine_process(delay_s=0.05) as survivor,
    ):
        async with routed([doomed.url, survivor.url], routing=routing) as r:
            statuses: list[str] = []

            async def client(worker: int) -> None:
                for i in range(30):
                    try:
                        if (worker + i) % 3:
                            answer = await r.upstream.complete(CHAT, chat(f"w{worker} q{i}"), MODEL)
                            assert (
                                answer["choices"][0]["message"]["content"] == "Hello from the stub."
                            )
                            statuses.append("ok")
                        else:
                            events = await drain(r.upstream, chat(f"w{worker} s{i}"))
                            assert events[-1] == b"[DONE]"
                            statuses.append("ok")
                    except StreamInterrupted:
                        statuses.append("cut")

            workers = [asyncio.create_task(client(w)) for w in range(6)]
            await asyncio.sleep(0.6)
            assert doomed.stats()["calls"] > 0  # it was taking its share of the load
            doomed.kill()
            await asyncio.wait_for(asyncio.gather(*workers), timeout=30)  # any 5xx raises here
            assert len(statuses) == 180
            assert statuses.count("cut") <= 6  # at most the streams open on it at the kill
            dead = r.pool.backends[0]
            assert not dead.healthy or dead.breaker.state is BreakerState.OPEN
            assert survivor.stats()["calls"] > 100


async def test_stalled_engine_times_out_fails_over_opens_then_recovers() -> None:
    routing = RoutingConfig(
        balancer=LEAST_LOADED,
        breaker=BreakerConfig(failure_threshold=2, cooldown_s=0.5),
    )
    timeouts = TimeoutConfig(first_byte_s=0.3)
    with running_fault_engine(mode="hang") as stalled, running_fault_engine() as healthy:
        async with routed([stalled.url, healthy.url], routing=routing, timeouts=timeouts) as r:
            breaker = r.pool.backends[0].breaker
            for _ in range(2):  # idle tie -> the first engine, which stalls: timeout, failover
                answer, took = await _timed_send(r.upstream)
                assert answer.route.backend.url == healthy.url and answer.route.reason == "fallback"
                assert answer.route.attempt == 2 and 0.3 <= took < 1.5
            assert breaker.state is BreakerState.OPEN
            assert stalled.calls == 2
            answer, took = await _timed_send(r.upstream)  # open: skipped at once, no timeout paid
            assert answer.route.backend.url == healthy.url and took < 0.25
            assert stalled.calls == 2
            assert r.pool.backends[0].healthy  # its /health still answers: passive signals only

            stalled.mode = "ok"  # the engine recovers
            await asyncio.sleep(0.55)  # cool-down
            assert breaker.state is BreakerState.HALF_OPEN
            answer, _ = await _timed_send(r.upstream)  # the trial request goes to it
            assert answer.route.backend.url == stalled.url
            assert breaker.state is BreakerState.CLOSED


async def _timed_send(upstream: Upstream) -> tuple[UpstreamResponse, float]:
    started = time.perf_counter()
    answer = await upstream.send(CHAT, chat("hi"), MODEL)
    return answer, time.perf_counter() - started


async def test_503_is_retried_on_another_engine_but_400_and_500_are_not() -> None:
    routing = RoutingConfig(balancer=LEAST_LOADED)
    with running_fault_engine(mode="fail") as failing, running_fault_engine() as good:
        async with routed([failing.url, good.url], routing=routing) as r:
            answer = await r.upstream.send(CHAT, chat(), MODEL)
            assert answer.route.backend.url == good.url and failing.calls == 1
            failing.mode = "reject"
            with pytest.raises(UpstreamError) as rejected:
                await r.upstream.send(CHAT, chat(), MODEL)
            assert rejected.value.status_code == 400 and good.calls == 1
            failing.mode = "error"
            with pytest.raises(UpstreamError) as broken:
                await r.upstream.send(CHAT, chat(), MODEL)
            assert broken.value.status_code == 500 and good.calls == 1
            assert r.pool.backends[0].breaker.snapshot()["consecutive_failures"] == 1


async def test_only_failing_engines_pass_the_last_503_on() -> None:
    with running_fault_engine(mode="fail") as one, running_fault_engine(mode="fail") as two:
        async with routed([one.url, two.url]) as r:
            with pytest.raises(UpstreamError) as failed:
                await r.upstream.send(CHAT, chat(), MODEL)
            assert failed.value.status_code == 503
            assert one.calls == 1 and two.calls == 1  # each engine once, then give up


async def test_never_retried_after_the_first_streamed_byte() -> None:
    routing = RoutingConfig(balancer=LEAST_LOADED)
    with running_fault_engine(mode="cut") as cutting, running_fault_engine() as good:
        async with routed([cutting.url, good.url], routing=routing) as r:
            opened = await r.upstream.stream(CHAT, chat(stream=True), MODEL)
            got: list[bytes] = []
            with pytest.raises(StreamInterrupted):
                async for event in opened.events():
                    got.append(event)
            await opened.aclose()
            assert len(got) == 2 and b"Hello" in got[0]
            assert cutting.calls == 1 and good.calls == 0
            assert r.pool.backends[0].breaker.snapshot()["consecutive_failures"] == 1
            assert r.pool.backends[0].in_flight == 0


async def test_a_stream_that_stalls_mid_way_is_cut_by_the_idle_timeout() -> None:
    timeouts = TimeoutConfig(idle_stream_s=0.3)
    with running_fault_engine(mode="stall") as stalling:
        async with routed([stalling.url], timeouts=timeouts) as r:
            started = time.perf_counter()
            with pytest.raises(StreamInterrupted, match=r"nothing for 0\.3 s"):
                await drain(r.upstream, chat())
            assert time.perf_counter() - started < 2
            assert r.pool.backends[0].breaker.last_failure is not None


async def test_overall_deadline_bounds_the_retries() -> None:
    routing = RoutingConfig(retry=RetryConfig(max_attempts=5, deadline_s=0.5))
    timeouts = TimeoutConfig(first_byte_s=10)
    with running_fault_engine(mode="hang") as one, running_fault_engine(mode="hang") as two:
        async with routed([one.url, two.url], routing=routing, timeouts=timeouts) as r:
            started = time.perf_counter()
            with pytest.raises(UpstreamTimeout):
                await r.upstream.send(CHAT, chat(), MODEL)
            assert time.perf_counter() - started < 1.5


async def test_dead_engines_give_503_with_retry_after_while_circuits_are_open() -> None:
    routing = RoutingConfig(breaker=BreakerConfig(failure_threshold=1, cooldown_s=30))
    with running_fault_engine(mode="error") as broken:
        async with routed([broken.url], routing=routing) as r:
            with pytest.raises(UpstreamError):
                await r.upstream.send(CHAT, chat(), MODEL)
            with pytest.raises(EnginesUnavailable) as unavailable:
                await r.upstream.send(CHAT, chat(), MODEL)
            assert unavailable.value.status_code == 503
            assert 25 <= int(unavailable.value.headers()["Retry-After"]) <= 30
    dead = f"http://127.0.0.1:{free_port()}"
    async with routed([dead], models=[MODEL]) as r:
        with pytest.raises(EnginesUnavailable) as nothing:
            await r.upstream.send(CHAT, chat(), MODEL)
        assert nothing.value.body()["error"]["code"] == "no_backend_available"


async def test_a_dead_engine_comes_back_through_the_probe_loop() -> None:
    with running_fault_engine() as engine:
        async with routed([engine.url], probe_interval_s=0.1) as r:
            engine.healthy = False
            await eventually(lambda: not r.pool.ready())
            engine.healthy = True
            await eventually(r.pool.ready)
            answer = await r.upstream.send(CHAT, chat(), MODEL)
            assert answer.body["choices"][0]["message"]["content"] == "Hello from the stub."
