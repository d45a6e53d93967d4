"""Speculative misses: the engine request starts while the semantic tier still looks.

Once the exact tier missed, the semantic tier (embedding + vector search, ~5-10 ms on a CPU)
decides between a hit and an engine call. Asking it first puts its time in front of every
miss's first token. When the engine the request would go to has headroom, the request path
(gateway/api/completions.py) instead starts the engine request at once and, once it is on its
way (the lookup's CPU work would otherwise delay it), asks the semantic tier beside it: a miss
has lost no time; a hit is served from the cache and the engine request
is withdrawn (closing its HTTP stream makes vLLM abort it), having cost the engine at most the
prefill it did meanwhile.

Headroom (``cache.speculative_max_load``): nobody waits for an admission slot of the model, the
engine the balancer would choose runs fewer than ``max_load`` x its ``max_in_flight`` of this
gateway's requests, and its last fresh /metrics scrape shows no request waiting in vLLM. Under
load the path stays sequential, so an aborted prefill never takes capacity a request needs.

The cache knows no engines and routing no cache: this module, built in app.py, is where the two
meet, like the auditor. Its counts are exported at /metrics:
``gateway_speculative_requests_total{outcome}`` (used: the semantic tier missed and the engine's
answer went out; aborted: a semantic hit withdrew it), ``gateway_speculative_skipped_total``
(no headroom), ``gateway_speculative_aborted_sent_requests_total`` and
``gateway_speculative_aborted_prompt_tokens_total`` (aborted requests already sent to an engine
when the hit withdrew them, and their prompt tokens: the prefill work that may have been wasted;
a request being sent at that very moment can go uncounted).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.cache.config import CacheConfig
from gateway.routing.admission import Admission
from gateway.routing.affinity import affinity_key
from gateway.routing.balancer import Balancer
from gateway.routing.config import BalancerConfig

Outcome = Literal["used", "aborted"]


@dataclass(slots=True)
class Attempt:
    """How far one speculative engine request got (filled in by the miss path)."""

    prompt_tokens: int | None = None  # from the token budget, when it could count them
    sending: asyncio.Event = field(default_factory=asyncio.Event)  # set by ``mark_sent``

    def mark_sent(self) -> None:
        self.sending.set()

    @property
    def sent(self) -> bool:
        """The request went to an engine (vLLM may have begun its prefill)."""
        return self.sending.is_set()


@dataclass(slots=True)
class SpeculationCounts:
    used: int = 0
    aborted: int = 0
    aborted_sent: int = 0  # aborted after reaching an engine
    aborted_prompt_tokens: int = 0  # of those, the prompt tokens counted
    skipped: int = 0  # the exact tier missed but there was no headroom

    def as_dict(self) -> dict[str, int]:
        return {
            "used": self.used,
            "aborted": self.aborted,
            "aborted_sent": self.aborted_sent,
            "aborted_prompt_tokens": self.aborted_prompt_tokens,
            "skipped": self.skipped,
        }


class Speculation:
    """Decides whether a miss may be speculative and counts what came of it."""

    def __init__(
        self,
        config: CacheConfig,
        balancer: Balancer,
        admission: Admission,
        balancing: BalancerConfig | None = None,
    ) -> None:
        self._enabled = config.speculative_miss and config.speculative_max_load > 0
        self._max_load = config.speculative_max_load
        self._balancer = balancer
        self._admission = admission
        self._balancing = balancing or BalancerConfig()
        self.counts = SpeculationCounts()

    def worth_it(self, model: str, body: dict[str, Any]) -> bool:
        """Whether to start this request's engine call before the semantic tier answers."""
        if not self._enabled:
            return False
        key = affinity_key(model, body, self._balancing)
        if self._admission.has_spare(model) and self._balancer.headroom(model, key, self._max_load):
            return True
        self.counts.skipped += 1
        return False

    def record(self, outcome: Outcome, attempt: Attempt) -> None:
        if outcome == "used":
            self.counts.used += 1
            return
        self.counts.aborted += 1
        if attempt.sent:
            self.counts.aborted_sent += 1
            self.counts.aborted_prompt_tokens += attempt.prompt_tokens or 0


class SpeculationCollector(Collector):
    """Exports a Speculation's counts (register it on the app's metrics registry)."""

    def __init__(self, speculation: Speculation) -> None:
        self._speculation = speculation

    def collect(self) -> Iterator[Metric]:
        counts = self._speculation.counts
        requests = CounterMetricFamily(
            "gateway_speculative_requests",
            "Engine requests started beside the semantic tier, by outcome: used (the semantic "
            "tier missed; the engine's answer went out), aborted (a semantic hit was served and "
            "the engine request withdrawn).",
            labels=["outcome"],
        )
        requests.add_metric(["used"], counts.used)
        requests.add_metric(["aborted"], counts.aborted)
        yield requests
        yield CounterMetricFamily(
            "gateway_speculative_aborted_sent_requests",
            "Aborted speculative requests that had already reached an engine.",
            value=counts.aborted_sent,
        )
        yield CounterMetricFamily(
            "gateway_speculative_aborted_prompt_tokens",
            "Prompt tokens of aborted speculative requests that had reached an engine (the most "
            "prefill work they can have wasted).",
            value=counts.aborted_prompt_tokens,
        )
        yield CounterMetricFamily(
            "gateway_speculative_skipped",
            "Exact-tier misses asked the semantic tier first because the engine had no headroom.",
            value=counts.skipped,
        )
