"""What the cache stores and what a lookup returns."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

LookupStatus = Literal["hit-exact", "hit-semantic", "miss", "bypass"]


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an integer, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A complete answer of an engine, as replayed on a hit.

    ``created`` is the unix time the answer was produced (the response's ``created`` field).
    """

    text: str
    finish_reason: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    created: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CachedAnswer:
        text, finish, model = data.get("text"), data.get("finish_reason"), data.get("model")
        created = data.get("created")
        if not isinstance(text, str) or not isinstance(finish, str) or not isinstance(model, str):
            raise ValueError("text, finish_reason and model must be strings")
        if isinstance(created, bool) or not isinstance(created, int | float):
            raise ValueError(f"created must be a unix time, got {created!r}")
        return cls(
            text=text,
            finish_reason=finish,
            model=model,
            prompt_tokens=_int(data, "prompt_tokens"),
            completion_tokens=_int(data, "completion_tokens"),
            created=float(created),
        )


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """One cache entry: the answer plus where it belongs and how long it lives.

    ``scope`` is ``"<namespace>:<digest>"`` (see policy.py); ``text`` is the query text that was
    embedded, kept for diagnostics and cache-quality evaluation. ``min_similarity`` is the
    entry's learned similarity: the semantic tier never serves it to a query less similar than
    that (raised when an audit finds its answer wrong; 0.0 = only the threshold applies).
    """

    entry_id: str
    scope: str
    exact_key: str
    text: str
    answer: CachedAnswer
    created_at: float
    expires_at: float
    min_similarity: float = 0.0

    @property
    def namespace(self) -> str:
        return scope_namespace(self.scope)

    def is_live(self, now: float) -> bool:
        return now < self.expires_at

    def to_json(self) -> str:
        return json.dumps(
            {
                "entry_id": self.entry_id,
                "scope": self.scope,
                "exact_key": self.exact_key,
                "text": self.text,
                "answer": self.answer.to_dict(),
                "created_at": self.created_at,
                "expires_at": self.expires_at,
                "min_similarity": self.min_similarity,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> StoredEntry:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("a stored entry must be a JSON object")
        return cls(
            entry_id=str(data["entry_id"]),
            scope=str(data["scope"]),
            exact_key=str(data["exact_key"]),
            text=str(data["text"]),
            answer=CachedAnswer.from_dict(data["answer"]),
            created_at=float(data["created_at"]),
            expires_at=float(data["expires_at"]),
            min_similarity=float(data.get("min_similarity", 0.0)),  # absent before audits
        )


def scope_namespace(scope: str) -> str:
    """The namespace part of a scope id ``"<namespace>:<digest>"``."""
    return scope.split(":", 1)[0]


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A search result: an entry and its exact cosine similarity to the query."""

    entry: StoredEntry
    similarity: float


@dataclass(frozen=True, slots=True)
class LookupResult:
    """The outcome of one lookup.

    ``reason`` says why a lookup was a bypass: ``"disabled"`` (cache off), ``"no-cache"`` (the
    request said not to look), ``"store-error"`` (the store failed or timed out) or
    ``"store-unavailable"`` (a recent error; the store is skipped for a moment).
    ``similarity`` is 1.0 for an exact hit; ``age_s`` is the entry's age in seconds.
    ``guard`` is the reason the polarity and slot guard refused the entry the hit policy would
    have served (guard.py); the lookup is then a miss, or a hit on another entry that passed.
    """

    status: LookupStatus
    answer: CachedAnswer | None = None
    entry_id: str | None = None
    similarity: float | None = None
    age_s: float | None = None
    threshold: float | None = None
    reason: str | None = None
    guard: str | None = None

    @property
    def hit(self) -> bool:
        return self.status in ("hit-exact", "hit-semantic")
