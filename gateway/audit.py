"""Audits of semantic hits: a sampled hit is answered again by an engine, off the request path.

A semantic hit serves an answer stored for another question; whether that was right is only
known by asking an engine. A fraction ``cache.audit.sample_rate`` of semantic hits is handed to
``Auditor.run`` after the hit went out. It sends the body the miss path would have sent (token
budget applied, ``stream: false``) to an engine, but only when one has a free slot right now:
nobody queued for one, the model under its admission capacity, an engine with room, fewer than
``max_concurrent`` audits running. Otherwise the audit is skipped, never queued, so an audit
never delays a request; it is not counted against any key's limits either. At most
``max_per_minute`` sampled hits a minute are handed to an audit, whatever the hit rate: on an
engine that shares the gateway's CPU (the CPU-only stack), 2 % of a busy hit stream kept the
engine generating and cut semantic hits/s to a third (docs/benchmarks.md section 1).

The fresh answer agrees with the served one when both are equal after whitespace and case
normalisation, or when the cosine of their embeddings (the cache's embedder) is at least
``cache.audit.agree``. A disagreement raises the entry's learned similarity
(``SemanticCache.record_audit``): it is no longer served to queries as far from it as this one.

The cache knows no engines and routing knows no cache: this module, built in app.py, is where
they meet.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from gateway.cache.config import AuditConfig
from gateway.cache.entry import LookupResult
from gateway.cache.policy import Kind
from gateway.cache.service import SemanticCache
from gateway.errors import GatewayError, RateLimited
from gateway.routing.admission import Admission
from gateway.routing.backends import BackendPool
from gateway.routing.budget import TokenBudget
from gateway.routing.upstream import Upstream

log = logging.getLogger(__name__)

Outcome = Literal["agreed", "disagreed", "skipped", "failed"]
Z_95 = 1.959964  # two-sided 95 %


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float] | None:
    """The Wilson score interval of a binomial proportion (95 % by default); None when n is 0.
    Unlike the normal approximation it stays inside [0, 1] and is honest at 0 or n successes,
    which is where an agreement rate lives."""
    if n <= 0:
        return None
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def normalise(text: str) -> str:
    """Whitespace and case do not make two answers differ."""
    return " ".join(text.casefold().split())


def answer_text(kind: Kind, body: Any) -> str | None:
    """The text of an engine's one-choice, non-streamed answer (None: no usable answer)."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
        return None
    choice = choices[0]
    text = (choice.get("message") or {}).get("content") if kind == "chat" else choice.get("text")
    return text if isinstance(text, str) else None


@dataclass(slots=True)
class AuditCounts:
    agreed: int = 0
    disagreed: int = 0
    skipped: int = 0  # no free engine slot at the time (never queued)
    capped: int = 0  # sampled less than 60 / max_per_minute s after the last audited one
    failed: int = 0  # the engine or the comparison failed: no verdict
    raised: int = 0  # entries whose learned similarity a disagreement raised

    @property
    def audited(self) -> int:
        return self.agreed + self.disagreed

    def as_dict(self) -> dict[str, Any]:
        interval = wilson_interval(self.agreed, self.audited)
        return {
            "audited": self.audited,
            "agreed": self.agreed,
            "disagreed": self.disagreed,
            "skipped": self.skipped,
            "capped": self.capped,
            "failed": self.failed,
            "entries_raised": self.raised,
            "agreement_rate": self.agreed / self.audited if self.audited else None,
            "agreement_low": None if interval is None else interval[0],
            "agreement_high": None if interval is None else interval[1],
        }


class Auditor:
    """Samples semantic hits (``wants``) and audits them in the background (``run``)."""

    def __init__(
        self,
        cache: SemanticCache,
        upstream: Upstream,
        admission: Admission,
        pool: BackendPool,
        budget: TokenBudget,
        config: AuditConfig,
        *,
        sample: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cache = cache
        self._upstream = upstream
        self._admission = admission
        self._pool = pool
        self._budget = budget
        self.config = config
        self._sample = sample
        self._clock = clock
        self._next_at = -math.inf  # when the per-minute cap lets the next audit begin
        self._running = 0
        self.counts = AuditCounts()

    def wants(self, result: LookupResult) -> bool:
        """Whether to audit this lookup's hit: semantic hits only, ``sample_rate`` of them, at
        most ``max_per_minute`` a minute."""
        sampled = (
            result.status == "hit-semantic"
            and result.entry_id is not None
            and result.answer is not None
            and self.config.sample_rate > 0
            and self._sample() < self.config.sample_rate
        )
        if not sampled:
            return False
        now, cap = self._clock(), self.config.max_per_minute
        if now < self._next_at:
            self.counts.capped += 1
            return False
        if cap is not None:
            self._next_at = now + 60 / cap
        return True

    def stats(self) -> dict[str, Any]:
        return {
            "sample_rate": self.config.sample_rate,
            "max_per_minute": self.config.max_per_minute,
            "agree": self.config.agree,
            "running": self._running,
            **self.counts.as_dict(),
        }

    async def run(
        self, kind: Kind, path: str, body: dict[str, Any], result: LookupResult
    ) -> Outcome:
        """Audits one served hit (``body``: the client's request). Never raises."""
        if self._running >= self.config.max_concurrent:
            return self._count("skipped")
        self._running += 1
        try:
            outcome = await self._audit(kind, path, body, result)
        except Exception:
            log.exception("cache audit of entry %s failed", result.entry_id)
            outcome = "failed"
        finally:
            self._running -= 1
        return self._count(outcome)

    async def _audit(
        self, kind: Kind, path: str, body: dict[str, Any], result: LookupResult
    ) -> Outcome:
        assert result.answer is not None and result.entry_id is not None
        model: str = body["model"]
        if not any(b.has_room() for b in self._pool.candidates(model)):
            return "skipped"
        try:
            budgeted = await self._budget.apply(path, body, model)
        except GatewayError:
            return "failed"
        request = {
            **{k: v for k, v in budgeted.body.items() if k not in ("cache", "stream_options")},
            "stream": False,
        }
        async with self._admission.spare_slot(model) as ticket:
            if ticket is None:
                return "skipped"
            try:
                response = await self._upstream.send(path, request, model)
            except RateLimited:  # every engine filled up in the meantime
                return "skipped"
            except GatewayError as exc:
                log.info("cache audit of entry %s got no answer: %s", result.entry_id, exc)
                return "failed"
        fresh = answer_text(kind, response.body)
        if fresh is None:
            return "failed"
        agreement = await self._agreement(result.answer.text, fresh)
        if agreement >= self.config.agree:
            return "agreed"
        served_at = result.similarity or 0.0
        floor = await self._cache.record_audit(result.entry_id, served_at, agreed=False)
        self.counts.raised += floor is not None
        log.warning(
            "cache audit: entry %s served at similarity %.4f disagrees with a fresh answer "
            "(answer cosine %.3f); it is now served only at %s or above",
            result.entry_id,
            served_at,
            agreement,
            "-" if floor is None else f"{floor:.4f}",
        )
        return "disagreed"

    async def _agreement(self, served: str, fresh: str) -> float:
        """1.0 for the same text up to whitespace and case, else the answers' cosine."""
        if normalise(served) == normalise(fresh):
            return 1.0
        a, b = await self._cache.embedder.embed_many([served, fresh])
        return float(a.vector @ b.vector)

    def _count(self, outcome: Outcome) -> Outcome:
        setattr(self.counts, outcome, getattr(self.counts, outcome) + 1)
        return outcome
