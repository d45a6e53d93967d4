"""Headroom for a speculative engine request: the engine the request would go to, the admission
queue, vLLM's own queue, and the speculative_max_load setting that bounds them."""

from __future__ import annotations

import time

import httpx

from gateway.cache.config import CacheConfig
from gateway.config import BackendConfig
from gateway.routing.admission import Admission
from gateway.routing.affinity import affinity_key
from gateway.routing.backends import BackendPool
from gateway.routing.balancer import Balancer
from gateway.routing.config import BalancerConfig
from gateway.routing.engine_metrics import EngineLoad
from gateway.speculation import Attempt, Speculation
from tests.routing.helpers import chat
from tests.support.stub_engines import MODEL


def pool_of(n: int, max_in_flight: int = 8) -> BackendPool:
    configs = [
        BackendConfig(url=f"http://e{i}", models=[MODEL], max_in_flight=max_in_flight)
        for i in range(n)
    ]
    pool = BackendPool(configs, httpx.AsyncClient())
    for backend in pool.backends:
        backend.healthy = True
    return pool


def test_headroom_is_the_chosen_engines_load_share_and_vllms_queue() -> None:
    pool = pool_of(2)
    balancer = Balancer(pool)
    key = affinity_key(MODEL, chat("hello"), BalancerConfig())
    route = balancer.choose(MODEL, key)
    assert route is not None
    chosen = route.backend
    other = next(b for b in pool.backends if b is not chosen)
    other.in_flight = 3  # busy too: the key stays on its engine (no bounded-load spill)
    assert balancer.headroom(MODEL, key, 0.5)
    chosen.in_flight = 3  # 3 of 8: under half
    assert balancer.headroom(MODEL, key, 0.5)
    chosen.in_flight = 4  # half: the engine is busy enough
    assert not balancer.headroom(MODEL, key, 0.5)
    assert balancer.headroom(MODEL, key, 0.75)
    chosen.in_flight = 0
    chosen.load = EngineLoad(waiting=1, running=8, at=time.monotonic())  # vLLM queues
    assert not balancer.headroom(MODEL, key, 0.5)
    chosen.load = EngineLoad(waiting=1, at=time.monotonic() - 3600)  # a stale scrape
    assert balancer.headroom(MODEL, key, 0.5)
    for backend in pool.backends:
        backend.healthy = False
    assert not balancer.headroom(MODEL, key, 1.0)  # nowhere to send it


async def test_speculation_needs_a_spare_admission_slot_and_counts_its_outcomes() -> None:
    pool = pool_of(1, max_in_flight=4)
    balancer = Balancer(pool)
    admission = Admission(pool.capacity)
    speculation = Speculation(CacheConfig(speculative_miss=True), balancer, admission)
    body = chat("where is my card?")
    assert speculation.worth_it(MODEL, body)
    slots = [admission.slot(MODEL) for _ in range(4)]
    async with slots[0], slots[1], slots[2], slots[3]:  # every slot taken: no spare one
        assert not admission.has_spare(MODEL)
        assert not speculation.worth_it(MODEL, body)
    assert speculation.counts.skipped == 1
    pool.backends[0].in_flight = 2  # half of 4
    assert not speculation.worth_it(MODEL, body)
    off = Speculation(CacheConfig(speculative_miss=False), balancer, admission)
    pool.backends[0].in_flight = 0
    assert not off.worth_it(MODEL, body) and off.counts.skipped == 0

    used, aborted = Attempt(prompt_tokens=12), Attempt(prompt_tokens=30)
    used.mark_sent()
    aborted.mark_sent()
    speculation.record("used", used)
    speculation.record("aborted", aborted)
    speculation.record("aborted", Attempt(prompt_tokens=50))  # never left
    counts = speculation.counts
    assert (counts.used, counts.aborted, counts.aborted_sent) == (1, 2, 1)
    assert counts.aborted_prompt_tokens == 30
