"""The conversations of the affinity benchmark (load/bench_affinity.py): what they say and when
they arrive.

Every conversation opens with one shared system prompt and its own long first user turn (a
customer profile: the per-session part whose KV cache affinity keeps on one engine), then asks
short follow-up questions, each turn resending the whole history as chat clients do.

Arrivals: closed loop (a fixed number of requests in flight) or open loop (conversations start
at Poisson times at a given rate; each turn is sent after the previous turn's answer plus a
think time), so that the offered load does not fall when an engine slows down.
"""

from __future__ import annotations

import random

TOPICS = ["card payments", "transfers", "exchange rates", "top-ups", "refunds", "fees", "PINs"]
QUESTIONS = [
    "Why was my card declined yesterday?",
    "How long does a transfer to another bank take?",
    "Can I change the currency of my account?",
    "What fee do I pay for a top-up by card?",
    "My refund has not arrived, what should I do?",
    "How do I reset my PIN?",
    "Is there a limit on cash withdrawals?",
]


def system_prompt(nonce: str, words: int) -> str:
    """About 1.28 tokens a word with SmolLM2's tokenizer (400 words: ~510 tokens)."""
    rng = random.Random(nonce)
    policy = " ".join(
        f"Rule {i}: when the customer asks about {rng.choice(TOPICS)}, answer in one sentence."
        for i in range(max(1, words // 14))
    )
    return f"[{nonce}] You are the support assistant of Example Bank. {policy}"


def profile(nonce: str, session: int, words: int) -> str:
    """About 1.42 tokens a word (800 words: ~1 130 tokens; 1 600 words: ~2 300)."""
    rng = random.Random(f"{nonce}-{session}")
    facts = " ".join(
        f"Fact {i}: the customer used {rng.choice(TOPICS)} on day {rng.randint(1, 28)}."
        for i in range(max(1, words // 11))
    )
    return f"[{nonce}] I am customer #{session}. {facts}"


def question(session: int, turn: int) -> str:
    return QUESTIONS[(session + turn) % len(QUESTIONS)]


def arrivals(sessions: int, rate: float, seed: str) -> list[float]:
    """Start offsets (s) of ``sessions`` conversations arriving as a Poisson process."""
    rng = random.Random(f"arrivals-{seed}")
    at, out = 0.0, []
    for _ in range(sessions):
        at += rng.expovariate(rate)
        out.append(at)
    return out


def think_times(sessions: int, turns: int, mean_s: float, seed: str) -> list[list[float]]:
    """Per conversation, the pause before each turn (none before the first): uniform in
    [0.5, 1.5] x ``mean_s``, bounded so that no conversation's next turn comes so late that
    its KV cache is gone for reasons of the draw rather than of the routing."""
    rng = random.Random(f"think-{seed}")
    return [
        [0.0] + [rng.uniform(0.5, 1.5) * mean_s for _ in range(turns - 1)] for _ in range(sessions)
    ]
