"""What the cache counts while it serves: hits, misses, inserts, errors, guard refusals."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from gateway.cache.entry import LookupResult


@dataclass(slots=True)
class CacheCounters:
    hits_exact: int = 0
    hits_semantic: int = 0
    misses: int = 0
    bypasses: int = 0  # lookups that skipped the cache because of store/embedder trouble
    skipped: int = 0  # lookups the request or config told to skip (no-cache, no-store, off)
    store_errors: int = 0
    inserts: int = 0
    insert_errors: int = 0
    tokens_saved: int = 0
    completion_tokens_saved: int = 0
    swept: int = 0
    kept: int = 0  # inserts skipped because a live entry already answers the request
    not_stored: int = 0  # answers whose finish_reason is not in cache.store_finish_reasons
    guard_refusals: Counter[str] = field(default_factory=Counter)  # by reason

    def count_lookup(self, result: LookupResult) -> None:
        if result.guard is not None:
            self.guard_refusals[result.guard] += 1
        if result.status == "miss":
            self.misses += 1
            return
        if result.status == "hit-exact":
            self.hits_exact += 1
        else:
            self.hits_semantic += 1
        if result.answer is not None:
            saved = result.answer.prompt_tokens + result.answer.completion_tokens
            self.tokens_saved += saved
            self.completion_tokens_saved += result.answer.completion_tokens

    def as_dict(self) -> dict[str, Any]:
        hits = self.hits_exact + self.hits_semantic
        return {
            "hits": hits,
            "hits_exact": self.hits_exact,
            "hits_semantic": self.hits_semantic,
            "misses": self.misses,
            "bypasses": self.bypasses,
            "skipped": self.skipped,
            "hit_ratio": hits / (hits + self.misses) if hits + self.misses else 0.0,
            "tokens_saved": self.tokens_saved,
            "completion_tokens_saved": self.completion_tokens_saved,
            "inserts": self.inserts,
            "insert_errors": self.insert_errors,
            "inserts_kept_existing": self.kept,
            "not_stored": self.not_stored,
            "guard_refusals": dict(self.guard_refusals),
            "store_errors": self.store_errors,
            "swept": self.swept,
        }
