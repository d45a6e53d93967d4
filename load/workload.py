"""A customer-support chatbot workload built from Banking77 (train.csv).

- Intents have Zipf popularity: intent of rank r (a seeded shuffle of the 77) is asked with
  probability proportional to 1 / r**s.
- A query is one of the dataset's own texts for its intent, so repeated questions arrive as
  real paraphrases, not as copies.
- A session is one conversation: every turn resends the shared system prompt and the whole
  history. It has 1 + Geometric turns (mean ``mean_turns``); a follow-up turn rephrases the
  same intent (probability ``rephrase``) or asks about a new one.
- A share ``repeat`` of the questions is asked in one of ``COMMON`` fixed phrasings of their
  intent (suggested questions, copy-paste): exact repeats, as real traffic has.
- ``warm_per_intent`` texts of each intent are kept apart as the cache's warm-up set (answer:
  one canonical answer per intent) and are never asked, so hits on them are semantic.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.cache.evaluate import Labelled
from load.banking77 import by_intent, unique

COMMON = 3
SYSTEM_PROMPT = (
    "You are the customer-support assistant of Bank77, an online bank. "
    "Answer the customer's question in one short sentence."
)


@dataclass(frozen=True, slots=True)
class Turn:
    intent: str
    text: str


@dataclass(frozen=True, slots=True)
class Session:
    number: int
    turns: tuple[Turn, ...]


def canonical_answer(intent: str) -> str:
    """The warm-up answer of an intent: unique per intent, so a hit names its intent."""
    topic = intent.replace("_", " ").rstrip("?")
    return (
        f"[{intent}] Thanks for asking about {topic}: the help centre article on it has the steps."
    )


class ChatbotWorkload:
    def __init__(
        self,
        rows: Sequence[Labelled],
        *,
        seed: int = 7,
        zipf_s: float = 1.1,
        mean_turns: float = 1.3,
        rephrase: float = 0.5,
        repeat: float = 0.2,
        warm_per_intent: int = 0,
        system_prompt: str = SYSTEM_PROMPT,
    ) -> None:
        if mean_turns < 1:
            raise ValueError("mean_turns must be >= 1")
        self.system_prompt = system_prompt
        self.mean_turns, self.rephrase, self.repeat = mean_turns, rephrase, repeat
        self.rng = random.Random(seed)
        groups = by_intent(unique(rows))
        self.intents = sorted(groups)
        self.rng.shuffle(self.intents)  # popularity rank
        self.weights = [1.0 / (rank + 1) ** zipf_s for rank in range(len(self.intents))]
        self.warm: dict[str, list[str]] = {}
        self.asked: dict[str, list[str]] = {}
        for intent in self.intents:
            texts = [row.text for row in groups[intent]]
            self.rng.shuffle(texts)
            keep = min(warm_per_intent, len(texts) - 1)
            self.warm[intent], self.asked[intent] = texts[:keep], texts[keep:]
        self._sessions = 0

    def popularity(self) -> dict[str, float]:
        total = sum(self.weights)
        return {i: w / total for i, w in zip(self.intents, self.weights, strict=True)}

    def _intent(self) -> str:
        return self.rng.choices(self.intents, self.weights)[0]

    def _query(self, intent: str) -> Turn:
        texts = self.asked[intent]
        if self.rng.random() < self.repeat:
            return Turn(intent, self.rng.choice(texts[:COMMON]))
        return Turn(intent, self.rng.choice(texts))

    def session(self) -> Session:
        turns = [self._query(self._intent())]
        p_more = 1 - 1 / self.mean_turns  # geometric number of extra turns, mean mean_turns-1
        while self.rng.random() < p_more and len(turns) < 8:
            same = self.rng.random() < self.rephrase
            turns.append(self._query(turns[-1].intent if same else self._intent()))
        self._sessions += 1
        return Session(self._sessions, tuple(turns))

    def messages(self, history: Sequence[tuple[Turn, str]], turn: Turn) -> list[dict[str, Any]]:
        """The chat messages of ``turn`` after ``history`` ((turn, assistant answer) pairs)."""
        messages: list[dict[str, Any]] = [{"role": "system", "content": self.system_prompt}]
        for earlier, answer in history:
            messages.append({"role": "user", "content": earlier.text})
            messages.append({"role": "assistant", "content": answer})
        messages.append({"role": "user", "content": turn.text})
        return messages

    def warm_entries(self) -> list[dict[str, Any]]:
        """Entries for POST /admin/cache/warm: first turns of the warm-up texts."""
        entries = []
        for intent in sorted(self.warm):
            answer = canonical_answer(intent)
            for text in self.warm[intent]:
                messages = self.messages([], Turn(intent, text))
                entries.append(
                    {
                        "messages": messages,
                        "answer": answer,
                        # what the engine would have spent (about 4 characters per token)
                        "prompt_tokens": sum(len(m["content"]) for m in messages) // 4 + 8,
                        "completion_tokens": len(answer) // 4,
                    }
                )
        return entries
