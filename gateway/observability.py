"""Prometheus metrics and structured JSON logs.

Each app owns its registry (tests run several apps in one process). Names follow Prometheus
conventions: ``gateway_`` prefix, base units (seconds), ``_total`` on counters. The hot path
only increments counters and observes histograms; gauges that mirror component state (engine
health, breakers, in-flight, queue) are refreshed by ``Metrics.refresh()`` right before a
scrape or a dashboard sample, so they cost the request path nothing.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.cache.guard import REASONS as GUARD_REASONS

if TYPE_CHECKING:
    from gateway.audit import Auditor
    from gateway.cache.calibration import OperatingPoint
    from gateway.cache.embedder import Embedder
    from gateway.routing.admission import Admission
    from gateway.routing.backends import BackendPool
    from gateway.routing.breaker import BreakerTransition

# Hits take milliseconds, engine answers seconds: dense enough for useful percentiles of both.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.4, 0.6, 0.8,
    1, 1.5, 2, 3, 4, 6, 8, 12, 20, 30, 60,
)  # fmt: skip
FAST_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512)
TPOT_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
HIT_RESULTS = ("hit-exact", "hit-semantic")

REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="-")
# When the current request arrived (time.perf_counter()), for client-side TTFT.
REQUEST_STARTED: ContextVar[float | None] = ContextVar("request_started", default=None)
# Fields the handlers add to the request's access-log line (model, tenant, ...).
REQUEST_FIELDS: ContextVar[dict[str, Any] | None] = ContextVar("request_fields", default=None)


class Metrics:
    def __init__(self, version: str = "") -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._updaters: dict[str, Callable[[], None]] = {}
        self._embedder: _EmbedderCollector | None = None
        self._audit: _AuditCollector | None = None
        Info("gateway_build", "The gateway's version.", registry=r).info({"version": version})
        self.requests = Counter(
            "gateway_requests_total",
            "Requests answered, by route, HTTP status and cache result.",
            ["route", "status", "cache"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "gateway_request_duration_seconds",
            "Completion requests: time to the last byte of the response.",
            ["route", "cache", "backend", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft_seconds = Histogram(
            "gateway_time_to_first_token_seconds",
            "Streaming responses: time from the request's arrival to the first content chunk.",
            ["cache", "backend", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tpot_seconds = Histogram(
            "gateway_time_per_output_token_seconds",
            "Streaming engine responses: mean time between output tokens after the first.",
            ["backend", "model"],
            buckets=TPOT_BUCKETS,
            registry=r,
        )
        self.cache_lookups = Counter(
            "gateway_cache_lookups_total",
            "Cache lookups by result (hit-exact, hit-semantic, miss, bypass). Hit ratio: "
            'sum(rate(..{result=~"hit-.*"}[5m])) / sum(rate(..{result=~"hit-.*|miss"}[5m])).',
            ["result"],
            registry=r,
        )
        for result in ("hit-exact", "hit-semantic", "miss", "bypass"):
            self.cache_lookups.labels(result)  # exported at 0 from the start: rate() works
        self.hit_ratio = Gauge(
            "gateway_cache_hit_ratio",
            "Hits / (hits + misses) since the gateway started (prefer the counters' rate).",
            registry=r,
        )
        self.cache_stage_seconds = Histogram(
            "gateway_cache_stage_duration_seconds",
            "Cache work by stage: exact (key lookup), embed (prompt embedding), "
            "search (vector search), insert (embed + store after a miss).",
            ["stage"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.cache_errors = Counter(
            "gateway_cache_store_errors_total",
            "Cache store (Redis) errors by kind (timeout, error, rejected); on the request path "
            "each one made a lookup bypass the cache or an insert be skipped.",
            ["store", "kind"],
            registry=r,
        )
        self.cache_guard_refusals = Counter(
            "gateway_cache_guard_refusals_total",
            "Semantic hits the polarity and slot guard refused, by reason (negation, opposite, "
            "number, unit, currency, entity, direction).",
            ["reason"],
            registry=r,
        )
        for reason in GUARD_REASONS:
            self.cache_guard_refusals.labels(reason)  # exported at 0 from the start
        self.cache_false_hit_estimate = Gauge(
            "gateway_cache_false_hit_rate_estimate",
            "Calibrated false-hit rate of the semantic tier per model and namespace, on the "
            "cache's own entries that share answers (bound: point, upper = 95 percent bound, "
            "target).",
            ["model", "namespace", "bound"],
            registry=r,
        )
        self.cache_calibrated_hit_rate = Gauge(
            "gateway_cache_calibrated_hit_rate",
            "Hit rate of the calibrated operating point on the same entries.",
            ["model", "namespace"],
            registry=r,
        )
        self.tokens_saved = Counter(
            "gateway_tokens_saved_total",
            "Prompt and completion tokens that cache hits kept off the engines.",
            ["model"],
            registry=r,
        )
        self.cost_saved = Counter(
            "gateway_cost_saved_total",
            "Estimated cost kept off the engines by cache hits (settings.price_per_1k_tokens).",
            ["model"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "gateway_backend_breaker_state",
            "Circuit breaker per engine: 0 closed, 1 half-open, 2 open.",
            ["backend"],
            registry=r,
        )
        self.breaker_transitions = Counter(
            "gateway_backend_breaker_transitions_total",
            "Circuit breaker transitions per engine, by the state entered.",
            ["backend", "state"],
            registry=r,
        )
        self.backend_up = Gauge(
            "gateway_backend_up",
            "1 if the engine answered its last probe.",
            ["backend"],
            registry=r,
        )
        self.in_flight = Gauge(
            "gateway_backend_in_flight_requests",
            "Requests an engine is working on for this gateway.",
            ["backend"],
            registry=r,
        )
        self.max_in_flight = Gauge(
            "gateway_backend_max_in_flight_requests",
            "Most requests the gateway sends an engine at once.",
            ["backend"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "gateway_admission_queue_depth", "Requests waiting for an engine slot.", registry=r
        )
        self.admitted = Gauge(
            "gateway_admission_in_flight_requests",
            "Admitted requests holding an engine slot, by model.",
            ["model"],
            registry=r,
        )
        self.rejected = Counter(
            "gateway_rejected_requests_total",
            "Requests shed with 429, by reason.",
            ["reason"],
            registry=r,
        )
        self.cache_hooks = CacheHooks(self)

    # -- state mirrored at scrape time -----------------------------------------------------

    def add_updater(self, name: str, update: Callable[[], None]) -> None:
        """``update()`` runs before every scrape and dashboard sample (it sets gauges); a
        second updater of the same name replaces the first (an app started twice)."""
        self._updaters[name] = update

    def refresh(self) -> None:
        for update in self._updaters.values():
            update()
        hits = misses = 0.0
        for sample in samples(self.cache_lookups, "_total"):
            if sample.labels["result"] in HIT_RESULTS:
                hits += sample.value
            elif sample.labels["result"] == "miss":
                misses += sample.value
        self.hit_ratio.set(hits / (hits + misses) if hits + misses else 0.0)

    def watch(self, pool: BackendPool, admission: Admission) -> None:
        """Mirror the engines' and the admission queue's state into gauges."""

        def update() -> None:
            for gauge in (self.backend_up, self.in_flight, self.max_in_flight, self.breaker_state):
                gauge.clear()  # engines removed from the pool must disappear
            for backend in pool.backends:
                url = backend.url
                self.backend_up.labels(url).set(1 if backend.healthy else 0)
                self.in_flight.labels(url).set(backend.in_flight)
                self.max_in_flight.labels(url).set(backend.max_in_flight)
                self.breaker_state.labels(url).set(BREAKER_STATES[backend.breaker.state.value])
            self.queue_depth.set(admission.queue_depth)
            self.admitted.clear()
            for model, running in admission.stats()["in_flight"].items():
                self.admitted.labels(model).set(running)

        self.add_updater("engines", update)

    def watch_embedder(self, embedder: Embedder) -> None:
        """Export the embedder's own counters (model calls, batch sizes, model time)."""
        if self._embedder is not None:
            self.registry.unregister(self._embedder)
        self._embedder = _EmbedderCollector(embedder)
        self.registry.register(self._embedder)

    def watch_audit(self, auditor: Auditor) -> None:
        """Export the audits of semantic hits: outcomes and the agreement rate's interval."""
        if self._audit is not None:
            self.registry.unregister(self._audit)
        self._audit = _AuditCollector(auditor)
        self.registry.register(self._audit)

    def on_breaker(self, change: BreakerTransition) -> None:
        """A breaker listener (BackendPool.add_breaker_listener)."""
        self.breaker_state.labels(change.name).set(BREAKER_STATES[change.new.value])
        self.breaker_transitions.labels(change.name, change.new.value).inc()


class CacheHooks:
    """What the semantic cache reports while it works (its ``observer``)."""

    def __init__(self, metrics: Metrics) -> None:
        self._stage = {
            stage: metrics.cache_stage_seconds.labels(stage)
            for stage in ("exact", "embed", "search", "insert")
        }
        self._stage_family = metrics.cache_stage_seconds
        self._errors = metrics.cache_errors
        self._refusals = metrics.cache_guard_refusals
        self._estimate = metrics.cache_false_hit_estimate
        self._calibrated_hits = metrics.cache_calibrated_hit_rate

    def on_stage(self, stage: str, seconds: float) -> None:
        child = self._stage.get(stage) or self._stage_family.labels(stage)
        child.observe(seconds)

    def on_store_error(self, store: str, kind: str) -> None:
        self._errors.labels(store, kind).inc()

    def on_guard_refusal(self, reason: str) -> None:
        self._refusals.labels(reason).inc()

    def on_operating_point(self, point: OperatingPoint) -> None:
        labels = (point.model, point.namespace)
        self._estimate.labels(*labels, "point").set(point.false_hit_rate)
        self._estimate.labels(*labels, "upper").set(point.false_hit_upper)
        self._estimate.labels(*labels, "target").set(point.target)
        self._calibrated_hits.labels(*labels).set(point.hit_rate)


class _EmbedderCollector(Collector):
    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder

    def collect(self) -> Iterator[Metric]:
        s = self._embedder.stats
        for name, doc, value in (
            ("requests", "Embeddings asked for (memo hits included).", s.requests),
            ("memo_hits", "Embeddings served from the recent-text memo.", s.memo_hits),
            ("batches", "Model calls (one per micro-batch).", s.model_calls),
            ("texts", "Texts the model embedded.", s.texts_embedded),
            ("errors", "Failed model calls.", s.errors),
            ("model_seconds", "Time spent in model calls.", s.model_seconds),
        ):
            yield CounterMetricFamily(f"gateway_embedder_{name}", doc, value=value)


class _AuditCollector(Collector):
    def __init__(self, auditor: Auditor) -> None:
        self._auditor = auditor

    def collect(self) -> Iterator[Metric]:
        counts = self._auditor.counts
        outcomes = CounterMetricFamily(
            "gateway_cache_audits",
            "Sampled semantic hits answered again by an engine in the background, by result: "
            "agreed, disagreed (the entry's learned similarity was raised), skipped (no free "
            "engine slot; audits never queue), capped (over cache.audit.max_per_minute), "
            "failed (no answer to compare).",
            labels=["result"],
        )
        for result in ("agreed", "disagreed", "skipped", "capped", "failed"):
            outcomes.add_metric([result], getattr(counts, result))
        yield outcomes
        stats = counts.as_dict()
        if stats["agreement_rate"] is None:
            return  # no audit yet: no rate to show
        for suffix, key, what in (
            ("", "agreement_rate", "Agreed / audited semantic hits since the gateway started."),
            ("_low", "agreement_low", "Lower bound of its 95 % Wilson interval."),
            ("_high", "agreement_high", "Upper bound of its 95 % Wilson interval."),
        ):
            name = f"gateway_cache_audit_agreement_ratio{suffix}"
            yield GaugeMetricFamily(name, what, value=stats[key])


def samples(metric: Any, suffix: str = "") -> Iterator[Any]:
    """The samples of one metric object (``suffix`` keeps e.g. only ``_total`` or ``_bucket``)."""
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith(suffix):
                yield sample


# -- logs ----------------------------------------------------------------------------------


def annotate(**fields: Any) -> None:
    """Add fields to the current request's access-log line (no-op outside a request)."""
    current = REQUEST_FIELDS.get()
    if current is not None:
        current.update(fields)


def prompt_preview(body: Mapping[str, Any], limit: int = 500) -> str:
    """The request's prompt text, shortened; only logged when settings.log_prompts is on."""
    if "messages" in body:
        parts = []
        for message in body.get("messages") or []:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list):
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            if content:
                parts.append(str(content))
        text = " | ".join(parts)
    else:
        prompt = body.get("prompt", "")
        text = prompt if isinstance(prompt, str) else json.dumps(prompt)
    return text if len(text) <= limit else text[:limit] + "..."


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra={...}`` fields are kept (request_id, tenant, ...)."""

    _standard = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in self._standard})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class RequestIdFilter(logging.Filter):
    """Stamps every record with the id of the request it was logged in ("-" outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


def configure_logging(level: str, *, as_json: bool = True) -> None:
    """JSON lines (or plain text) on stderr, each with the request id of its request."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at info, the engines' health probes included: debug only.
    quiet = logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
    logging.getLogger("httpx").setLevel(quiet)
