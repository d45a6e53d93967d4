"""An engine's load as read from its Prometheus ``/metrics`` text (vLLM, or llama.cpp's
llama-server started with ``--metrics``).

Samples carry labels (``model_name``, ``engine`` for data-parallel ranks); one server's value is
the sum over them (max for the KV-cache usage ratio). llama-server exports no KV-cache ratio or
prefix-cache counters in vLLM's sense; its requests processing (in a slot) and deferred (waiting
for one) are the running and waiting counts.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
KV_USAGE = "vllm:kv_cache_usage_perc"
PREFIX_HITS = "vllm:prefix_cache_hits_total"
PREFIX_QUERIES = "vllm:prefix_cache_queries_total"
LLAMA_WAITING = "llamacpp:requests_deferred"
LLAMA_RUNNING = "llamacpp:requests_processing"
_SAME_AS = {LLAMA_WAITING: WAITING, LLAMA_RUNNING: RUNNING}
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
    """Parse an engine's metrics text; raises ValueError on text that is not Prometheus format."""
    sums: dict[str, float] = {}
    kv: float | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = _SAME_AS.get(sample.name, sample.name)
            if name in _SUMMED:
                sums[name] = sums.get(name, 0.0) + sample.value
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
