"""vLLM's load as read from its Prometheus ``/metrics`` text.

Samples carry labels (``model_name``, ``engine`` for data-parallel ranks); one server's value is
the sum over them (max for the KV-cache usage ratio).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
KV_USAGE = "vllm:kv_cache_usage_perc"
PREFIX_HITS = "vllm:prefix_cache_hits_total"
PREFIX_QUERIES = "vllm:prefix_cache_queries_total"
_SUMMED = (WAITING, RUNNING, PREFIX_HITS, PREFIX_QUERIES)


@dataclass(frozen=True)
class EngineLoad:
    """One scrape. ``None`` where the engine did not export the metric."""

    waiting: float | None = None
    running: float | None = None
    kv_cache_usage: float | None = None  # 0..1
    prefix_cache_hits: float | None = None  # tokens, counter
    prefix_cache_queries: float | None = None  # tokens, counter
    at: float = 0.0  # time.monotonic() of the scrape

    def prefix_hit_ratio(self) -> float | None:
        if not self.prefix_cache_queries or self.prefix_cache_hits is None:
            return None
        return self.prefix_cache_hits / self.prefix_cache_queries


def parse_engine_metrics(text: str, *, at: float = 0.0) -> EngineLoad:
    """Parse vLLM's metrics text; raises ValueError on text that is not Prometheus format."""
    sums: dict[str, float] = {}
    kv: float | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in _SUMMED:
                sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
            elif sample.name == KV_USAGE:
                kv = sample.value if kv is None else max(kv, sample.value)
    return EngineLoad(
        waiting=sums.get(WAITING),
        running=sums.get(RUNNING),
        kv_cache_usage=kv,
        prefix_cache_hits=sums.get(PREFIX_HITS),
        prefix_cache_queries=sums.get(PREFIX_QUERIES),
        at=at,
    )
