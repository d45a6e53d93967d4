"""SemanticCache: the exact and semantic tiers over a store and an embedder.

The request path calls ``lookup`` (or its two tiers apart: ``lookup_exact``, then
``lookup_semantic``) and, after a complete answer went out, ``insert``. Neither
ever raises: store trouble (down, slow, out of memory) makes a lookup a ``bypass`` and an insert
a no-op, both counted (store_calls.py: a time budget per call, a rest after a failure). Admin
operations (warm, delete, flush) raise CacheUnavailable instead, so the admin API can say 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from functools import partial
from types import TracebackType
from typing import Any, Protocol

from gateway.background import stop_task
from gateway.cache.calibration import OperatingPoint, calibrate_warmed, calibration_target
from gateway.cache.config import CacheConfig
from gateway.cache.control import CacheControl
from gateway.cache.decision import HitPolicy, build_policy, choose_guarded
from gateway.cache.embedder import Embedder
from gateway.cache.entry import CachedAnswer, LookupResult, LookupStatus, StoredEntry
from gateway.cache.guard import DEFAULT_WORDS, Guard, GuardWords
from gateway.cache.policy import CacheQuery, Kind, cache_query
from gateway.cache.stats import CacheCounters
from gateway.cache.store import CacheStore
from gateway.cache.store_calls import StoreCalls, StoreFailed
from gateway.cache.warm import plan_warm

log = logging.getLogger(__name__)
_WARM_CHUNK = 256


# One tier of a lookup: a final result, or None to ask the next tier.
_Tier = Callable[[CacheQuery, float], Awaitable[LookupResult | None]]


class CacheObserver(Protocol):
    """Told how long each lookup stage took and about each store error (e.g. for metrics)."""

    def on_stage(self, stage: str, seconds: float) -> None: ...

    def on_store_error(self, store: str, kind: str) -> None: ...

    def on_guard_refusal(self, reason: str) -> None: ...

    def on_operating_point(self, point: OperatingPoint) -> None: ...


class SemanticCache:
    """The cache service the gateway talks to. Use ``async with`` or start()/close()."""

    def __init__(
        self,
        store: CacheStore,
        embedder: Embedder,
        config: CacheConfig,
        *,
        owns_embedder: bool = True,
        policy: HitPolicy | None = None,
        guard: Guard | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.config = config
        self._owns_embedder = owns_embedder
        self.policy = policy or build_policy(config.policy, min_score=config.consensus_min_score)
        self.guard = guard
        if guard is None and config.guard:
            self.guard = Guard(GuardWords.load(config.guard_words or DEFAULT_WORDS))
        self._clock = clock
        self.counters = CacheCounters()  # this replica's (cluster_stats sums them)
        self.operating_points: dict[str, OperatingPoint] = {}  # scope -> calibrated point
        self._calls = StoreCalls(
            store, config.store_timeout_s, config.store_retry_after_s, self._store_error
        )
        self._sweeper: asyncio.Task[None] | None = None
        self.observer: CacheObserver | None = None

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        await self.embedder.start()
        ready = getattr(self.store, "ready", None)  # a Redis Cluster learns its slot map
        if ready is not None:
            await ready()
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="cache-sweeper")

    async def close(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        await stop_task(sweeper)
        with contextlib.suppress(Exception):
            await self.store.close()
        if self._owns_embedder:
            await self.embedder.close()

    async def __aenter__(self) -> SemanticCache:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- request path ----------------------------------------------------------------------
    def query(
        self, kind: Kind, body: Mapping[str, Any], tenant: str, control: CacheControl
    ) -> CacheQuery | None:
        """cache_query with this cache's settings (tool caching on or off)."""
        return cache_query(
            kind,
            body,
            tenant,
            control,
            allow_tools=self.config.cache_tool_requests,
            embedder=self.embedder.model_id,
        )

    def threshold_for(self, q: CacheQuery) -> float:
        return self.config.threshold_for(q.model, q.namespace, q.control.threshold)

    async def lookup(self, q: CacheQuery) -> LookupResult:
        """Exact tier, then semantic tier. Never raises."""
        return await self.lookup_exact(q) or await self.lookup_semantic(q)

    async def lookup_exact(self, q: CacheQuery) -> LookupResult | None:
        """The exact tier alone: a hit or a bypass, or None when the semantic tier decides
        (the caller may start the engine request before asking it). Never raises."""
        return await self._tier(q, self._exact)

    async def lookup_semantic(self, q: CacheQuery) -> LookupResult:
        """The semantic tier, once ``lookup_exact`` returned None. Never raises."""
        return await self._tier(q, self._semantic) or LookupResult("miss")

    async def _tier(self, q: CacheQuery, tier: _Tier) -> LookupResult | None:
        """Runs one tier; store trouble or a bug makes the lookup a counted bypass."""
        if not self.config.enabled or not q.control.lookup:
            self.counters.skipped += 1
            return LookupResult(
                "bypass", reason="disabled" if not self.config.enabled else "no-cache"
            )
        if self._calls.resting():
            self.counters.bypasses += 1
            return LookupResult("bypass", reason="store-unavailable")
        threshold = self.threshold_for(q)
        try:
            result = await tier(q, threshold)
        except StoreFailed:
            self.counters.bypasses += 1
            return LookupResult("bypass", threshold=threshold, reason="store-error")
        except Exception:
            log.exception("cache lookup failed")
            self.counters.bypasses += 1
            return LookupResult("bypass", threshold=threshold, reason="error")
        if result is None:
            return None
        self.counters.count_lookup(result)
        if result.guard is not None:
            log.info("cache guard refused a hit (%s) for %r", result.guard, q.text[:80])
            if self.observer is not None:
                self.observer.on_guard_refusal(result.guard)
        return result

    def keeps(self, answer: CachedAnswer) -> bool:
        """Whether an answer is worth storing: non-empty and finished for a reason in
        ``cache.store_finish_reasons`` (by default "stop" and "length": max_tokens is in the
        scope, so the same request would get the same cut answer)."""
        return bool(answer.text) and answer.finish_reason in self.config.store_finish_reasons

    async def insert(self, q: CacheQuery, answer: CachedAnswer) -> str | None:
        """Store an answer that ``keeps`` allows. Returns the entry id, or None when not stored
        (not allowed, not worth keeping, or store trouble). Never raises."""
        if not self.config.enabled or not q.control.store:
            return None
        if not self.keeps(answer):
            self.counters.not_stored += 1
            return None
        if self._calls.resting():
            self.counters.insert_errors += 1
            return None
        try:
            # Never replace a live entry from the request path (e.g. after Cache-Control:
            # no-cache, or a lookup that bypassed a slow store): a warmed, curated answer stays.
            # Only the admin warm-up replaces entries.
            existing = await self._calls.call(self.store.get_exact(q.scope, q.exact_key))
            if existing is not None and existing.is_live(self._clock()):
                self.counters.kept += 1
                return None
            embedding = await self.embedder.embed_query(q.text)
            entry = self._new_entry(q, answer, q.control.ttl_s)
            vector = None if embedding.truncated else embedding.vector
            await self._calls.call(self.store.add(entry, vector))
        except Exception as exc:
            if not isinstance(exc, StoreFailed):
                log.exception("cache insert failed")
            self.counters.insert_errors += 1
            return None
        self.counters.inserts += 1
        return entry.entry_id

    async def record_audit(self, entry_id: str, similarity: float, agreed: bool) -> float | None:
        """An audit's verdict on a semantic hit of ``entry_id`` served at ``similarity``: when
        it disagreed, the entry is from then on served only at ``similarity + audit.margin``
        or closer (at most 1.0: near-exact repeats). Returns that floor, else None. Never raises."""
        if agreed:
            return None
        floor = min(1.0, similarity + self.config.audit.margin)
        with contextlib.suppress(StoreFailed):  # logged and counted by _store_call
            if await self._calls.call(self.store.raise_min_similarity(entry_id, floor)):
                return floor
        return None

    # -- admin -----------------------------------------------------------------------------
    async def warm(
        self,
        model: str,
        entries: Iterable[Mapping[str, Any]],
        tenant: str,
        namespace: str = "default",
        *,
        params: Mapping[str, Any] | None = None,
        ttl_s: float | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> int:
        """Store known answers (entry format: see warm.py). All entries are validated before
        any is stored (ValueError names the first bad one). Returns how many were stored."""
        planned = plan_warm(
            entries,
            model=model,
            tenant=tenant,
            namespace=namespace,
            params=params,
            ttl_s=ttl_s,
            allow_tools=self.config.cache_tool_requests,
            now=self._clock(),
            embedder=self.embedder.model_id,
        )
        # Vectors are kept for calibration only when this warm-up is calibrated (calibration.py).
        target = calibration_target(self.config, model, namespace)
        samples: dict[str, list[tuple[StoredEntry, Any]]] = {}  # scope -> (entry, vector)
        for start in range(0, len(planned), _WARM_CHUNK):
            chunk = planned[start : start + _WARM_CHUNK]
            embeddings = await self.embedder.embed_many([item.query.text for item in chunk])
            batch = []
            for item, embedding in zip(chunk, embeddings, strict=True):
                entry = self._new_entry(item.query, item.answer, item.ttl_s)
                vector = None if embedding.truncated else embedding.vector
                batch.append((entry, vector))
                if vector is not None and target is not None:
                    samples.setdefault(entry.scope, []).append((entry, vector))
            await self._calls.admin(self.store.add_many(batch))
            if on_progress is not None:
                on_progress(len(chunk))
        self.counters.inserts += len(planned)
        if target is not None:
            for scope_samples in samples.values():
                await calibrate_warmed(self, model, namespace, scope_samples, target)
        return len(planned)

    async def get(self, entry_id: str) -> StoredEntry | None:
        return await self._calls.admin(self.store.get(entry_id))

    async def delete(self, entry_id: str) -> bool:
        return await self._calls.admin(self.store.delete(entry_id))

    async def delete_namespace(self, namespace: str) -> int:
        return await self._calls.admin(self.store.delete_namespace(namespace))

    async def flush(self) -> int:
        return await self._calls.admin(self.store.flush())

    async def sweep(self) -> int:
        removed = await self._calls.admin(self.store.sweep())
        self.counters.swept += removed
        return removed

    async def stats(self) -> dict[str, Any]:
        entries: int | None
        try:
            entries = await self._calls.call(self.store.count())
        except StoreFailed:
            entries = None
        return {
            "store": self.store.name,
            "store_available": not self._calls.resting(),
            "entries": entries,
            "policy": self.policy.name,
            "guard": self.guard is not None,
            "operating_points": [p.as_dict() for p in self.operating_points.values()],
            **self.counters.as_dict(),
            "embedder": self.embedder.stats.as_dict(),
        }

    # -- internals -------------------------------------------------------------------------
    async def _exact(self, q: CacheQuery, threshold: float) -> LookupResult | None:
        started = time.perf_counter()
        entry = await self._calls.call(self.store.get_exact(q.scope, q.exact_key))
        self._observe("exact", started)
        now = self._clock()
        if entry is not None and self._servable(entry, now, q.control.max_age_s):
            return self._result("hit-exact", entry, 1.0, now, threshold)
        return None

    async def _semantic(self, q: CacheQuery, threshold: float) -> LookupResult:
        max_age = q.control.max_age_s
        started = time.perf_counter()
        embedding = await self.embedder.embed_query(q.text)
        started = self._observe("embed", started)
        if embedding.truncated:  # the vector only saw a prefix: comparing it could mislead
            return LookupResult("miss", threshold=threshold)
        strict = (
            self.config.explicit_threshold(q.model, q.namespace, q.control.threshold) is not None
        )
        point = None if strict else self.operating_points.get(q.scope)
        if point is not None:  # calibrated for cache.max_false_hit_rate
            threshold = point.threshold
        k, floor = self.policy.search_params(threshold, self.config.search_k)
        neighbours = await self._calls.call(self.store.search(q.scope, embedding.vector, k, floor))
        self._observe("search", started)
        now = self._clock()
        live = [n for n in neighbours if self._servable(n.entry, now, max_age, n.similarity)]
        chosen, refused = choose_guarded(
            self.policy,
            live,
            threshold,
            strict=strict,
            cut=None if point is None else point.cut,
            refusal=None if self.guard is None else partial(self.guard.refusal, q.text),
        )
        if chosen is not None:
            result = self._result("hit-semantic", chosen.entry, chosen.similarity, now, threshold)
            return replace(result, guard=refused)
        return LookupResult("miss", threshold=threshold, guard=refused)

    @staticmethod
    def _servable(
        entry: StoredEntry, now: float, max_age: float | None, similarity: float = 1.0
    ) -> bool:
        """Live, young enough, and (an audit may have raised it) at its learned similarity."""
        fresh = entry.is_live(now) and (max_age is None or now - entry.created_at <= max_age)
        return fresh and similarity >= entry.min_similarity

    @staticmethod
    def _result(
        status: LookupStatus, entry: StoredEntry, similarity: float, now: float, threshold: float
    ) -> LookupResult:
        return LookupResult(
            status,
            answer=entry.answer,
            entry_id=entry.entry_id,
            similarity=min(similarity, 1.0),
            age_s=max(0.0, now - entry.created_at),
            threshold=threshold,
        )

    def _new_entry(self, q: CacheQuery, answer: CachedAnswer, ttl_s: float | None) -> StoredEntry:
        ttl = min(ttl_s if ttl_s is not None else self.config.default_ttl_s, self.config.max_ttl_s)
        now = self._clock()
        return StoredEntry(
            entry_id=uuid.uuid4().hex,
            scope=q.scope,
            exact_key=q.exact_key,
            text=q.text,
            answer=answer,
            created_at=now,
            expires_at=now + ttl,
        )

    def _observe(self, stage: str, started: float) -> float:
        now = time.perf_counter()
        if self.observer is not None:
            self.observer.on_stage(stage, now - started)
        return now

    def _store_error(self, kind: str) -> None:
        self.counters.store_errors += 1
        if self.observer is not None:
            self.observer.on_store_error(self.store.name, kind)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval_s)
            try:
                removed = await self.sweep()
            except Exception as exc:  # keep sweeping; the store may be back next time
                log.warning("cache sweep failed: %s", exc)
            else:
                if removed:
                    log.info("cache sweep removed %d expired entries", removed)
