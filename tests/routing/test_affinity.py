"""Prefix affinity keys, rendezvous hashing and the balancer's choices (and their reasons)."""

from __future__ import annotations

import time
from collections import Counter

import httpx
import pytest

from gateway.config import BackendConfig
from gateway.routing.affinity import affinity_key, block_hashes, prefix_text, rendezvous_rank
from gateway.routing.backends import BackendPool
from gateway.routing.balancer import Balancer
from gateway.routing.config import BalancerConfig, RoutingConfig
from gateway.routing.engine_metrics import EngineLoad, parse_engine_metrics
from tests.routing.helpers import CHAT, chat, routed
from tests.support.stub_engines import MODEL, running_fault_engine

SYSTEM = "You are a helpful banking assistant. " * 20
KEYS = [f"key-{i}" for i in range(3000)]


def owners(nodes: list[tuple[str, float]]) -> dict[str, str]:
    return {k: rendezvous_rank(k, nodes)[0] for k in KEYS}


def test_removing_an_engine_moves_only_its_share() -> None:
    nodes = [(f"http://e{i}", 1.0) for i in range(5)]
    before = owners(nodes)
    after = owners([n for n in nodes if n[0] != "http://e2"])
    moved = [k for k in KEYS if before[k] != after[k]]
    assert moved and all(before[k] == "http://e2" for k in moved)
    assert len(moved) == sum(1 for k in KEYS if before[k] == "http://e2")
    # the orphaned keys spread over all four survivors, not onto one
    assert len({after[k] for k in moved}) == 4


def test_adding_an_engine_takes_only_keys_it_now_wins() -> None:
    nodes = [(f"http://e{i}", 1.0) for i in range(4)]
    before = owners(nodes)
    after = owners([*nodes, ("http://new", 1.0)])
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(after[k] == "http://new" for k in moved)
    assert 0.14 < len(moved) / len(KEYS) < 0.26  # about 1/5


def test_weights_set_the_share() -> None:
    share = Counter(owners([("http://big", 3.0), ("http://small", 1.0)]).values())
    assert share["http://big"] / len(KEYS) == pytest.approx(0.75, abs=0.04)


def test_a_conversation_keeps_its_key_as_it_grows_and_conversations_differ() -> None:
    config = BalancerConfig()
    turn1 = chat("What is my balance?", system=SYSTEM)
    turn2 = {
        **turn1,
        "messages": [
            *turn1["messages"],
            {"role": "assistant", "content": "It is 10 EUR."},
            {"role": "user", "content": "And yesterday?"},
        ],
    }
    other = chat("How do I close my account?", system=SYSTEM)
    assert affinity_key(MODEL, turn1, config) == affinity_key(MODEL, turn2, config)
    assert affinity_key(MODEL, turn1, config) != affinity_key(MODEL, other, config)
    assert affinity_key("other-model", turn1, config) != affinity_key(MODEL, turn1, config)
    # key order inside a message does not matter (canonical JSON)
    reordered = {
        **turn1,
        "messages": [{"content": m["content"], "role": m["role"]} for m in turn1["messages"]],
    }
    assert affinity_key(MODEL, reordered, config) == affinity_key(MODEL, turn1, config)


def test_a_responses_conversation_keys_like_the_same_chat() -> None:
    config = BalancerConfig()
    turn1 = {"instructions": SYSTEM, "input": "What is my balance?"}
    turn2 = {
        "instructions": SYSTEM,
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "What is my balance?"}]},
            {"role": "assistant", "content": "It is 10 EUR."},
            {"role": "user", "content": "And yesterday?"},
        ],
    }
    as_chat = chat("What is my balance?", system=SYSTEM)
    assert affinity_key(MODEL, turn1, config) == affinity_key(MODEL, turn2, config)
    assert affinity_key(MODEL, turn1, config) == affinity_key(MODEL, as_chat, config)
    other = {"instructions": SYSTEM, "input": "How do I close my account?"}
    assert affinity_key(MODEL, other, config) != affinity_key(MODEL, turn1, config)


def test_conversations_under_a_long_shared_system_prompt_keep_keys_of_their_own() -> None:
    """A system prompt longer than the block window must not merge every conversation."""
    config = BalancerConfig(block_chars=64, prefix_blocks=2)
    long_system = "You are the support assistant of a bank. " * 20  # 840 chars >> 128
    keys = {
        affinity_key(MODEL, chat(f"question {i}", system=long_system), config) for i in range(8)
    }
    assert len(keys) == 8
    follow_up = chat("question 3", system=long_system)
    follow_up["messages"] += [
        {"role": "assistant", "content": "An answer."},
        {"role": "user", "content": "And then?"},
    ]
    assert affinity_key(MODEL, follow_up, config) in keys  # the conversation stays put


def test_completion_prompts_are_keyed_by_their_leading_blocks() -> None:
    config = BalancerConfig(block_chars=64, prefix_blocks=2)
    head = "x" * 128
    assert affinity_key(MODEL, {"prompt": head + "tail one"}, config) == affinity_key(
        MODEL, {"prompt": head + "a different tail"}, config
    )
    assert affinity_key(MODEL, {"prompt": "y" + head}, config) != affinity_key(
        MODEL, {"prompt": head}, config
    )
    assert prefix_text({"prompt": [1, 2, 3]}) == "[1,2,3]"
    assert prefix_text({"prompt": ""}) is None
    hashes = block_hashes("a" * 100, 30, 10)
    assert len(hashes) == 4 and len(set(hashes)) == 4


def pool_of(n: int) -> BackendPool:
    pool = BackendPool(
        [BackendConfig(url=f"http://e{i}", models=[MODEL], max_in_flight=10) for i in range(n)],
        httpx.AsyncClient(),
    )
    for backend in pool.backends:
        backend.healthy = True
    return pool


def test_balancer_reasons_affinity_fallback_least_loaded() -> None:
    pool = pool_of(3)
    # load_bound=None: the preferred engine keeps its keys until overloaded, then the least
    # loaded takes them (bounded loads: tests/routing/test_bounded_load.py)
    balancer = Balancer(pool, BalancerConfig(overload_in_flight_ratio=0.8, load_bound=None))
    key = affinity_key(MODEL, chat("hello", system=SYSTEM), BalancerConfig())
    assert key is not None
    first = balancer.choose(MODEL, key)
    assert first is not None and first.reason == "affinity"
    preferred = first.backend
    assert all(balancer.choose(MODEL, key).backend is preferred for _ in range(5))  # type: ignore[union-attr]

    preferred.in_flight = 8  # 80 %: overloaded
    others = [b for b in pool.backends if b is not preferred]
    others[0].in_flight = 3
    moved = balancer.choose(MODEL, key)
    assert moved is not None and moved.reason == "fallback" and moved.backend is others[1]
    bounded = Balancer(pool, BalancerConfig(overload_in_flight_ratio=0.8)).choose(MODEL, key)
    second = rendezvous_rank(key, [(b.url, 1.0) for b in pool.backends])[1]
    assert bounded is not None and bounded.reason == "spill" and bounded.backend.url == second

    preferred.in_flight = 0
    preferred.breaker.force_open("test")  # open circuit: the key goes to its next choice
    nxt = balancer.choose(MODEL, key)
    assert nxt is not None and nxt.backend is not preferred and nxt.reason == "affinity"
    assert nxt.backend.url == rendezvous_rank(key, [(b.url, 1.0) for b in pool.backends])[1]

    anon = balancer.choose(MODEL, None)
    assert anon is not None and anon.reason == "least-loaded" and anon.backend is others[1]
    retry = balancer.choose(MODEL, key, exclude=[nxt.backend], retry=True)
    assert retry is not None and retry.reason == "fallback" and retry.backend is not nxt.backend


def test_balancer_never_exceeds_max_in_flight() -> None:
    pool = pool_of(2)
    balancer = Balancer(pool)
    for backend in pool.backends:
        backend.in_flight = backend.max_in_flight
    assert balancer.choose(MODEL, "k") is None
    pool.backends[1].in_flight -= 1
    decision = balancer.choose(MODEL, "k")
    assert decision is not None and decision.backend is pool.backends[1]


def test_scraped_vllm_load_steers_away_from_a_busy_engine() -> None:
    pool = pool_of(2)
    balancer = Balancer(pool, BalancerConfig(overload_waiting=4))
    busy, idle = pool.backends
    busy.load = EngineLoad(waiting=6, running=4, kv_cache_usage=0.5, at=time.monotonic())
    assert balancer.overloaded(busy) and not balancer.overloaded(idle)
    assert balancer.choose(MODEL, None).backend is idle  # type: ignore[union-attr]
    busy.load = EngineLoad(waiting=6, at=time.monotonic() - 3600)  # stale scrapes are ignored
    assert not balancer.overloaded(busy)


def test_parse_vllm_metrics_text() -> None:
    text = """# HELP vllm:num_requests_waiting Waiting.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 2.0
vllm:num_requests_waiting{engine="1",model_name="m"} 1.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 4.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.75
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 200.0
vllm:prefix_cache_queries_created{engine="0",model_name="m"} 1.7e9
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 50.0
"""
    load = parse_engine_metrics(text)
    assert (load.waiting, load.running, load.kv_cache_usage) == (3.0, 4.0, 0.75)
    assert load.prefix_hit_ratio() == pytest.approx(0.25)
    assert parse_engine_metrics("").waiting is None


async def test_probe_loop_scrapes_metrics_from_the_engine() -> None:
    metrics = (
        '# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name="m"} 9\n'
    )
    with running_fault_engine(metrics_text=metrics) as busy, running_fault_engine() as plain:
        async with routed([busy.url, plain.url]) as r:
            by_url = {b.url: b for b in r.pool.backends}
            scraped = by_url[busy.url].load
            assert scraped is not None and scraped.waiting == 9
            assert by_url[plain.url].load is None  # 404 on /metrics: just no load data
            assert r.pool.snapshot()[0]["engine_load"]["waiting"] == 9
            # busy is overloaded by vLLM's queue: every request, whatever its key, goes to plain
            for i in range(6):
                answer = await r.upstream.send(CHAT, chat(f"question {i}", system=SYSTEM), MODEL)
                assert answer.route.backend.url == plain.url
            assert busy.calls == 0


async def test_a_shared_prefix_conversation_stays_on_one_engine() -> None:
    with running_fault_engine() as a, running_fault_engine() as b, running_fault_engine() as c:
        async with routed([a.url, b.url, c.url]) as r:
            engines: dict[str, set[str]] = {}
            for conversation in range(6):
                messages = [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"I am customer {conversation}."},
                ]
                for turn in range(4):
                    opened = await r.upstream.stream(
                        CHAT, {"model": MODEL, "messages": messages, "stream": True}, MODEL
                    )
                    text = [e async for e in opened.events()]
                    await opened.aclose()
                    assert text[-1] == b"[DONE]"
                    engines.setdefault(str(conversation), set()).add(opened.backend.url)
                    assert opened.route.reason == "affinity"
                    messages += [
                        {"role": "assistant", "content": "Hello from the stub."},
                        {"role": "user", "content": f"follow-up {turn}"},
                    ]
            assert all(len(used) == 1 for used in engines.values())
            assert len(set().union(*engines.values())) >= 2  # different conversations spread
            # the engine got the routing hint
            assert all(
                h.startswith("reason=affinity; attempt=1; key=")
                for h in a.hints + b.hints + c.hints
            )


def test_round_robin_is_available_as_a_baseline() -> None:
    pool = pool_of(2)
    balancer = Balancer(
        pool, RoutingConfig(balancer=BalancerConfig(strategy="round_robin")).balancer
    )
    picks = [balancer.choose(MODEL, "same-key").backend.url for _ in range(4)]  # type: ignore[union-attr]
    assert picks == ["http://e0", "http://e1", "http://e0", "http://e1"]
