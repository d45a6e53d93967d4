"""Prometheus metrics and structured JSON logs.

Each app owns its registry (tests run several apps in one process). Names follow Prometheus
conventions: ``gateway_`` prefix, base units (seconds), ``_total`` on counters.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="-")
FAST_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gateway_requests_total",
            "Requests answered, by route, HTTP status and cache result.",
            ["route", "status", "cache"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "gateway_request_duration_seconds",
            "Time to the last byte of the response.",
            ["route", "cache", "backend", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft_seconds = Histogram(
            "gateway_time_to_first_token_seconds",
            "Streaming responses: time to the first content chunk.",
            ["cache", "backend", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tpot_seconds = Histogram(
            "gateway_time_per_output_token_seconds",
            "Streaming engine responses: mean time between output tokens after the first.",
            ["backend", "model"],
            buckets=(*FAST_BUCKETS, 1.0),
            registry=r,
        )
        self.cache_lookups = Counter(
            "gateway_cache_lookups_total",
            "Cache lookups by result (hit-exact, hit-semantic, miss, bypass).",
            ["result"],
            registry=r,
        )
        self.cache_stage_seconds = Histogram(
            "gateway_cache_stage_duration_seconds",
            "Cache work by stage (embed, search, exact, insert).",
            ["stage"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.cache_errors = Counter(
            "gateway_cache_store_errors_total",
            "Cache store (Redis) errors and timeouts; each one made a request bypass the cache.",
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
        self.queue_depth = Gauge(
            "gateway_admission_queue_depth", "Requests waiting for an engine slot.", registry=r
        )
        self.rejected = Counter(
            "gateway_rejected_requests_total",
            "Requests shed with 429, by reason.",
            ["reason"],
            registry=r,
        )


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


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


def configure_logging(level: str, *, as_json: bool = True) -> None:
    """JSON lines (or plain text) on stderr, each with the request id of its request."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
