"""Bounded-load affinity: a key leaves its preferred engine for the next one in its rendezvous
order once that engine carries more than ``load_bound`` x its share, long before
``max_in_flight``; ``load_bound=None`` is the old rule (stay until overloaded)."""

from __future__ import annotations

import math
import time
from collections import Counter

import httpx

from gateway.config import BackendConfig
from gateway.routing.affinity import rendezvous_rank
from gateway.routing.backends import Backend, BackendPool
from gateway.routing.balancer import Balancer
from gateway.routing.config import BalancerConfig
from gateway.routing.engine_metrics import EngineLoad
from tests.support.stub_engines import MODEL

KEY = "conversation-7"


def pool_of(n: int, weights: list[float] | None = None) -> BackendPool:
    weights = weights or [1.0] * n
    configs = [
        BackendConfig(url=f"http://e{i}", models=[MODEL], max_in_flight=64, weight=weights[i])
        for i in range(n)
    ]
    pool = BackendPool(configs, httpx.AsyncClient())
    for backend in pool.backends:
        backend.healthy = True
    return pool


def ranked(pool: BackendPool, key: str = KEY) -> list[Backend]:
    by_url = {b.url: b for b in pool.backends}
    nodes = [(b.url, b.config.weight) for b in pool.backends]
    return [by_url[u] for u in rendezvous_rank(key, nodes)]


def test_a_busy_preferred_engine_spills_to_the_next_rendezvous_choice() -> None:
    pool = pool_of(3)
    first, second, third = ranked(pool)
    first.in_flight, second.in_flight, third.in_flight = 10, 3, 0  # far below 0.8 x 64
    old = Balancer(pool, BalancerConfig(load_bound=None)).choose(MODEL, KEY)
    assert old is not None and old.backend is first and old.reason == "affinity"
    # total 13 + 1 over 3 engines: a share of 4.67, bound 1.25 -> at most 6 per engine
    new = Balancer(pool, BalancerConfig(load_bound=1.25)).choose(MODEL, KEY)
    assert new is not None and new.reason == "spill"
    assert new.backend is second  # the key's own second choice, not the least loaded (third)


def test_no_spill_while_the_preferred_engine_is_within_its_bound_or_floor() -> None:
    pool = pool_of(2)
    first, second = ranked(pool)
    balancer = Balancer(pool, BalancerConfig(load_bound=1.25, load_bound_floor=4))
    first.in_flight, second.in_flight = 3, 0  # under the floor: batching is nearly free
    assert balancer.choose(MODEL, KEY).backend is first  # type: ignore[union-attr]
    # the bound with the new request counted: own + 1 <= ceil(1.25 x (total + 1) / 2)
    for own, other in ((9, 6), (10, 6), (11, 6)):  # 10 <= 10, 11 <= 11, 12 <= 12
        first.in_flight, second.in_flight = own, other
        assert balancer.choose(MODEL, KEY).backend is first  # type: ignore[union-attr]
    first.in_flight = 12  # 13 > ceil(1.25 x 19 / 2) = 12
    decision = balancer.choose(MODEL, KEY)
    assert decision is not None and decision.backend is second and decision.reason == "spill"


def test_vllm_waiting_queue_counts_as_load_while_fresh() -> None:
    pool = pool_of(2)
    first, second = ranked(pool)
    balancer = Balancer(pool, BalancerConfig(load_bound=1.25, overload_waiting=100))
    first.in_flight = 2
    first.load = EngineLoad(waiting=12, at=time.monotonic())  # other clients queue there
    assert balancer.queue_load(first) == 14
    assert balancer.choose(MODEL, KEY).backend is second  # type: ignore[union-attr]
    first.load = EngineLoad(waiting=12, at=time.monotonic() - 3600)  # stale: ignored
    assert balancer.choose(MODEL, KEY).backend is first  # type: ignore[union-attr]


def place(balancer: Balancer, pool: BackendPool, keys: list[str]) -> Counter[str]:
    """Routes requests one after the other, none finishing: the in-flight counts add up."""
    for key in keys:
        decision = balancer.choose(MODEL, key)
        assert decision is not None
        decision.backend.in_flight += 1
    return Counter({b.url: b.in_flight for b in pool.backends})


def test_a_hot_conversation_is_shared_only_with_its_second_choice() -> None:
    """One key sending 40 requests at once: without the bound all stay on one engine; with it
    the load is capped at 1.25 x the mean and the overflow goes to the key's next choice
    first (so its prefix is cached on as few engines as the load allows)."""
    old_pool, new_pool = pool_of(4), pool_of(4)
    old = place(Balancer(old_pool, BalancerConfig(load_bound=None)), old_pool, [KEY] * 40)
    assert sorted(old.values()) == [0, 0, 0, 40]
    new = place(Balancer(new_pool, BalancerConfig(load_bound=1.25)), new_pool, [KEY] * 40)
    assert max(new.values()) <= math.ceil(1.25 * 40 / 4)
    order = [b.url for b in ranked(new_pool)]
    assert new[order[0]] >= new[order[1]] >= new[order[2]] >= new[order[3]]


def test_many_keys_stay_balanced_and_mostly_at_home() -> None:
    pool = pool_of(2)
    balancer = Balancer(pool, BalancerConfig(load_bound=1.25))
    keys = [f"conversation-{i}" for i in range(32)] * 2  # two requests each, none finished
    reasons: Counter[str] = Counter()
    for key in keys:
        decision = balancer.choose(MODEL, key)
        assert decision is not None
        decision.backend.in_flight += 1
        reasons[decision.reason] += 1
        total = sum(b.in_flight for b in pool.backends)
        bound = max(BalancerConfig().load_bound_floor, math.ceil(1.25 * total / 2))
        assert all(b.in_flight <= bound for b in pool.backends)
    assert set(reasons) <= {"affinity", "spill"}
    assert reasons["affinity"] >= 0.75 * len(keys)


def test_weights_scale_each_engines_bound() -> None:
    pool = pool_of(2, weights=[3.0, 1.0])
    big, small = pool.backends
    loads = place(Balancer(pool, BalancerConfig(load_bound=1.25)), pool, [KEY] * 40)
    assert loads[small.url] <= math.ceil(1.25 * 40 * 1 / 4)
    assert loads[big.url] <= math.ceil(1.25 * 40 * 3 / 4)
