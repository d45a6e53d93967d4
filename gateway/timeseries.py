"""Per-second history of the gateway's metrics, in process, for the dashboard.

Once a second ``Sampler`` reads the Prometheus metrics (the same numbers /metrics shows) into a
``Snapshot`` of cumulative values and keeps the last ``history_s`` of them in a ring. Because
the ring holds running totals, any window is one subtraction: requests/s between two samples,
or a latency histogram over the trailing 10 s whose percentiles are interpolated the way
PromQL's ``histogram_quantile`` does it. Nothing here touches the request path.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from gateway.background import stop_task
from gateway.observability import HIT_RESULTS, LATENCY_BUCKETS, Metrics, samples

COMPLETION_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages")
CACHE_RESULTS = ("hit-exact", "hit-semantic", "miss", "bypass", "other")
RATE_WINDOW_S = 5  # requests/s of each point: over the trailing 5 s (1 s is too noisy)
PERCENTILE_WINDOW_S = 10  # latency percentiles of each point: the trailing 10 s
RATIO_WINDOW_S = 30  # hit ratio of each point: the trailing 30 s
SUMMARY_WINDOW_S = 60  # the tiles' latency percentiles: the last minute
BOUNDS = (*LATENCY_BUCKETS, math.inf)  # request duration and TTFT share these buckets


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Cumulative values at time ``t`` (gauges: their value then)."""

    t: float
    requests: dict[str, float]  # completion requests answered, by cache result
    errors: float  # completion requests answered with a 5xx
    rejected: float  # completion requests shed with 429
    latency: tuple[float, ...]  # cumulative histogram buckets (le order, +Inf last)
    ttft: tuple[float, ...]
    lookups: dict[str, float]  # cache lookups by result
    tokens_saved: float
    cost_saved: float
    in_flight: float
    queue_depth: float
    backends: dict[str, tuple[int, int]]  # url -> (up, breaker state 0/1/2)


def take(metrics: Metrics, t: float) -> Snapshot:
    """Read the metrics now (refresh the gauges first)."""
    requests = dict.fromkeys(CACHE_RESULTS, 0.0)
    errors = rejected = 0.0
    for s in samples(metrics.requests, "_total"):
        if s.labels["route"] not in COMPLETION_ROUTES:
            continue
        cache = s.labels["cache"] if s.labels["cache"] in requests else "other"
        requests[cache] += s.value
        errors += s.value if s.labels["status"].startswith("5") else 0.0
        rejected += s.value if s.labels["status"] == "429" else 0.0
    lookups: dict[str, float] = {}
    for s in samples(metrics.cache_lookups, "_total"):
        lookups[s.labels["result"]] = lookups.get(s.labels["result"], 0.0) + s.value
    up = {s.labels["backend"]: int(s.value) for s in samples(metrics.backend_up)}
    breaker = {s.labels["backend"]: int(s.value) for s in samples(metrics.breaker_state)}
    return Snapshot(
        t=t,
        requests=requests,
        errors=errors,
        rejected=rejected,
        latency=_buckets(
            s for s in samples(metrics.request_seconds, "_bucket")
            if s.labels["route"] in COMPLETION_ROUTES
        ),
        ttft=_buckets(samples(metrics.ttft_seconds, "_bucket")),
        lookups=lookups,
        tokens_saved=sum(s.value for s in samples(metrics.tokens_saved, "_total")),
        cost_saved=sum(s.value for s in samples(metrics.cost_saved, "_total")),
        in_flight=sum(s.value for s in samples(metrics.in_flight)),
        queue_depth=sum(s.value for s in samples(metrics.queue_depth)),
        backends={url: (up.get(url, 0), breaker.get(url, 0)) for url in sorted({*up, *breaker})},
    )  # fmt: skip


def _buckets(bucket_samples: Iterable[Any]) -> tuple[float, ...]:
    """Sum the ``_bucket`` samples of every label set, per upper bound, in bound order."""
    totals: dict[float, float] = {}
    for s in bucket_samples:
        bound = float(s.labels["le"])
        totals[bound] = totals.get(bound, 0.0) + s.value
    return tuple(totals[b] for b in sorted(totals))


def quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float | None:
    """PromQL's histogram_quantile over cumulative ``counts`` (None without observations)."""
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    for i, cumulative in enumerate(counts):
        if cumulative >= rank:
            upper = bounds[i]
            if math.isinf(upper):  # in the +Inf bucket: the highest finite bound
                return bounds[i - 1] if i > 0 else None
            lower = bounds[i - 1] if i > 0 else 0.0
            below = counts[i - 1] if i > 0 else 0.0
            inside = cumulative - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 1.0)
    return None


class Sampler:
    """Samples ``metrics`` every ``every_s`` while entered (``async with``)."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        every_s: float = 1.0,
        history_s: float = 900.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._metrics = metrics
        self.every_s = every_s
        self._ring: deque[Snapshot] = deque(maxlen=int(history_s / every_s) + 1)
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self.started_at = clock()

    async def __aenter__(self) -> Sampler:
        self.sample()
        self._task = asyncio.create_task(self._loop(), name="metrics-sampler")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    def sample(self) -> None:
        self._metrics.refresh()
        self._ring.append(take(self._metrics, self._clock()))

    async def _loop(self) -> None:
        while True:  # ticks on whole multiples of every_s: tidy timestamps
            await asyncio.sleep(self.every_s - self._clock() % self.every_s)
            self.sample()

    # -- reading ---------------------------------------------------------------------------

    def data(self, window_s: float = 300.0) -> dict[str, Any]:
        """The last ``window_s`` as columns (one entry per sample), plus a summary."""
        ring = list(self._ring)
        # Each point is a difference with an earlier sample, so the first sample has none.
        points = range(max(1, len(ring) - max(1, int(window_s / self.every_s))), len(ring))

        def back(i: int, seconds: float) -> Snapshot:
            return ring[max(i - max(1, round(seconds / self.every_s)), 0)]

        pairs = [(ring[i], back(i, RATE_WINDOW_S)) for i in points]

        def percentile(q: float, field: str, i: int) -> float | None:
            now, then = getattr(ring[i], field), getattr(back(i, PERCENTILE_WINDOW_S), field)
            return _round(quantile(q, BOUNDS, _minus(now, then)))

        series: dict[str, Any] = {
            "t": [round(a.t, 3) for a, _ in pairs],
            "rps": [_rate(_total(a), _total(b), a.t - b.t) for a, b in pairs],
            "requests_by_cache": {
                key: [_rate(a.requests[key], b.requests[key], a.t - b.t) for a, b in pairs]
                for key in CACHE_RESULTS
            },
            "errors_ps": [_rate(a.errors, b.errors, a.t - b.t) for a, b in pairs],
            "rejected_ps": [_rate(a.rejected, b.rejected, a.t - b.t) for a, b in pairs],
            "hit_ratio": [_hit_ratio(ring[i], back(i, RATIO_WINDOW_S)) for i in points],
            "tokens_saved": [a.tokens_saved for a, _ in pairs],
            "cost_saved": [round(a.cost_saved, 6) for a, _ in pairs],
            "in_flight": [a.in_flight for a, _ in pairs],
            "queue_depth": [a.queue_depth for a, _ in pairs],
        }
        for q, key in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
            series[key] = [percentile(q, "latency", i) for i in points]
            series[f"ttft_{key}"] = [percentile(q, "ttft", i) for i in points]
        urls = sorted({url for a, _ in pairs for url in a.backends})
        lanes = {
            url: {
                "up": [a.backends[url][0] if url in a.backends else None for a, _ in pairs],
                "breaker": [a.backends[url][1] if url in a.backends else None for a, _ in pairs],
            }
            for url in urls
        }
        return {
            "interval_s": self.every_s,
            "started_at": self.started_at,
            "series": series,
            "backends": lanes,
            "summary": self._summary(ring),
        }

    def _summary(self, ring: list[Snapshot]) -> dict[str, Any]:
        if not ring:
            return {}
        last = ring[-1]
        recent = ring[max(len(ring) - 1 - round(PERCENTILE_WINDOW_S / self.every_s), 0)]
        minute = ring[max(len(ring) - 1 - round(SUMMARY_WINDOW_S / self.every_s), 0)]
        hits = sum(last.lookups.get(r, 0.0) for r in HIT_RESULTS)
        misses = last.lookups.get("miss", 0.0)
        lat = _minus(last.latency, minute.latency)
        ttft = _minus(last.ttft, minute.ttft)
        return {
            "requests": _total(last),
            "rps": _rate(_total(last), _total(recent), max(last.t - recent.t, self.every_s)),
            "hits": hits,
            "hits_exact": last.lookups.get("hit-exact", 0.0),
            "hits_semantic": last.lookups.get("hit-semantic", 0.0),
            "misses": misses,
            "bypasses": last.lookups.get("bypass", 0.0),
            "hit_ratio": round(hits / (hits + misses), 4) if hits + misses else None,
            "errors": last.errors,
            "rejected": last.rejected,
            "p50": _round(quantile(0.5, BOUNDS, lat)),
            "p95": _round(quantile(0.95, BOUNDS, lat)),
            "p99": _round(quantile(0.99, BOUNDS, lat)),
            "ttft_p50": _round(quantile(0.5, BOUNDS, ttft)),
            "ttft_p95": _round(quantile(0.95, BOUNDS, ttft)),
            "tokens_saved": last.tokens_saved,
            "cost_saved": round(last.cost_saved, 6),
            "in_flight": last.in_flight,
            "queue_depth": last.queue_depth,
        }


def _total(snapshot: Snapshot) -> float:
    return sum(snapshot.requests.values())


def _rate(now: float, before: float, dt: float) -> float:
    return round(max(now - before, 0.0) / max(dt, 1e-9), 4)


def _minus(now: tuple[float, ...], before: tuple[float, ...]) -> list[float]:
    if len(before) != len(now):  # the histogram had no samples yet back then
        return list(now)
    return [a - b for a, b in zip(now, before, strict=True)]


def _hit_ratio(now: Snapshot, before: Snapshot) -> float | None:
    hits = sum(now.lookups.get(r, 0.0) - before.lookups.get(r, 0.0) for r in HIT_RESULTS)
    misses = now.lookups.get("miss", 0.0) - before.lookups.get("miss", 0.0)
    return round(hits / (hits + misses), 4) if hits + misses > 0 else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 5)
