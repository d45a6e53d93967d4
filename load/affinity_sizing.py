"""A model of the affinity benchmark's prefix-cache hit ratios, for sizing a run before paying
for a GPU: each engine is an LRU of 16-token blocks (vLLM's prefix cache, its eviction
simplified), conversations arrive open loop as in load/bench_affinity.py, and a request hits
the leading blocks its engine still holds. No latency model: answers take ``answer_s``.

    python -m load.affinity_sizing --engines 2 --rate 14 --sessions 420
    python -m load.affinity_sizing --engines 4 --rate 28 --sessions 840

It shows why two engines cannot give affinity a 2x hit ratio over round robin (docs/routing.md):
round robin sends a turn back to the engine holding the conversation one time in n.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import random
from collections import OrderedDict
from dataclasses import dataclass

BLOCK = 16


@dataclass(frozen=True)
class Sizing:
    engines: int = 2
    cache_blocks: int = 4096  # 65 536 tokens (pool-h200-stack.yaml)
    system_tokens: int = 256  # --system-words 200
    profile_tokens: int = 2303  # --profile-words 1600
    turn_tokens: int = 40  # a question, an answer of 16 tokens, the chat template
    turns: int = 4
    rate: float = 14.0  # conversations a second
    think_s: float = 0.5
    answer_s: float = 0.12
    sessions: int = 420
    seed: int = 1


def _rank(session: int, engines: int) -> list[int]:
    score = [
        hashlib.blake2b(f"{session}-{e}".encode(), digest_size=8).digest() for e in range(engines)
    ]
    return sorted(range(engines), key=lambda e: score[e], reverse=True)


def hit_ratio(sizing: Sizing, strategy: str) -> float:
    """Prefix-cache hits / queries (tokens) over the run: ``round_robin`` or ``affinity``."""
    rng = random.Random(sizing.seed)
    caches: list[OrderedDict[tuple[int, int], None]] = [
        OrderedDict() for _ in range(sizing.engines)
    ]
    events: list[tuple[float, int, int]] = []  # (time, session, turn): a request is sent
    at = 0.0
    for session in range(sizing.sessions):
        at += rng.expovariate(sizing.rate)
        heapq.heappush(events, (at, session, 0))
    hits = queries = sent = 0
    sys_blocks = sizing.system_tokens // BLOCK
    while events:
        now, session, turn = heapq.heappop(events)
        length = sizing.system_tokens + sizing.profile_tokens + turn * sizing.turn_tokens
        blocks = [(-1, i) if i < sys_blocks else (session, i) for i in range(length // BLOCK)]
        if strategy == "round_robin":
            engine = sent % sizing.engines
        else:
            engine = _rank(session, sizing.engines)[0]
        sent += 1
        cache = caches[engine]
        cached = 0
        while cached < len(blocks) and blocks[cached] in cache:
            cached += 1
        hits += cached * BLOCK
        queries += length
        for block in reversed(blocks):  # the tail is evicted before the head
            cache.pop(block, None)
            cache[block] = None
        while len(cache) > sizing.cache_blocks:
            cache.popitem(last=False)
        if turn + 1 < sizing.turns:
            pause = sizing.answer_s + rng.uniform(0.5, 1.5) * sizing.think_s
            heapq.heappush(events, (now + pause, session, turn + 1))
    return hits / queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Sizing()
    for name, value in vars(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    sizing = Sizing(**vars(parser.parse_args()))
    rr, aff = hit_ratio(sizing, "round_robin"), hit_ratio(sizing, "affinity")
    print(f"round robin {rr:.1%}  affinity {aff:.1%}  ratio {aff / rr:.2f}x")


if __name__ == "__main__":
    main()
