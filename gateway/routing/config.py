"""Routing settings: one ``RoutingConfig``, nested into ``Settings`` as ``settings.routing``.

Environment examples (prefix ``GATEWAY_``, nested with ``__``):
``GATEWAY_ROUTING__BREAKER__FAILURE_THRESHOLD=3``, ``GATEWAY_ROUTING__ADMISSION__QUEUE_SIZE=64``,
``GATEWAY_ROUTING__RATE_LIMITS__KEYS='{"sk-a": {"requests_per_minute": 10}}'``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator


class BreakerConfig(BaseModel):
    """Per-engine circuit breaker (passive health: errors and timeouts of real requests)."""

    failure_threshold: int = Field(default=5, ge=1, description="Consecutive failures that open.")
    window_s: float = Field(default=30.0, gt=0, description="Rolling window for the error ratio.")
    error_ratio: float = Field(
        default=0.5, gt=0, le=1, description="Ratio in the window that opens."
    )
    min_requests: int = Field(
        default=10, ge=1, description="Requests in the window before the ratio is judged."
    )
    cooldown_s: float = Field(default=10.0, gt=0, description="Open -> half-open after this.")
    max_cooldown_s: float = Field(
        default=120.0, gt=0, description="Cool-down doubles on each failed trial, up to this."
    )
    half_open_trials: int = Field(default=1, ge=1, description="Concurrent trial requests.")
    successes_to_close: int = Field(default=1, ge=1, description="Trial successes that close.")


class RetryConfig(BaseModel):
    """Failover before the first byte: another engine, exponential backoff with jitter."""

    max_attempts: int = Field(default=3, ge=1, description="Attempts in all (1 = no retry).")
    backoff_initial_s: float = Field(default=0.05, ge=0)
    backoff_max_s: float = Field(default=1.0, ge=0)
    jitter_s: float = Field(default=0.05, ge=0)
    deadline_s: float = Field(
        default=150.0, gt=0, description="Overall time to get an engine's response headers."
    )


class BalancerConfig(BaseModel):
    """Prefix affinity (rendezvous hashing) first, then the least-loaded engine."""

    strategy: Literal["affinity", "least_loaded", "round_robin"] = "affinity"
    block_chars: int = Field(default=256, ge=16, description="Characters per prefix block.")
    prefix_blocks: int = Field(default=8, ge=1, description="Leading blocks that form the key.")
    affinity_user_turns: int = Field(
        default=1, ge=1, description="Chat: leading messages up to this many user turns."
    )
    load_bound: float | None = Field(
        default=1.25,
        ge=1.0,
        description="Bounded-load affinity: an engine takes a key while its load (requests in "
        "flight plus vLLM's waiting queue), counting the new request, stays within this many "
        "times its weighted share of the load over the routable engines; else the key goes to "
        "its next engine in rendezvous order. None: the preferred engine keeps its keys until "
        "it is overloaded.",
    )
    load_bound_floor: int = Field(
        default=8,
        ge=1,
        description="Bounded-load affinity never moves a key off an engine running fewer than "
        "this many requests: vLLM batches a few at almost no cost, a moved conversation "
        "pays a prefill.",
    )
    overload_in_flight_ratio: float = Field(
        default=0.8, gt=0, le=1, description="in_flight / max_in_flight that counts as overloaded."
    )
    overload_waiting: int = Field(
        default=8, ge=1, description="vLLM num_requests_waiting that counts as overloaded."
    )
    overload_kv_cache: float = Field(
        default=0.95, gt=0, le=1, description="vLLM kv_cache_usage_perc that counts as overloaded."
    )
    scrape_metrics: bool = Field(
        default=True, description="Read vLLM's /metrics in the probe loop."
    )
    metrics_max_age_s: float = Field(
        default=30.0, gt=0, description="Scraped load older than this is ignored."
    )
    hint_header: str = Field(
        default="x-gateway-route", description="Header sent to the engine with the routing choice."
    )


class AdmissionConfig(BaseModel):
    """Backpressure: at most sum(max_in_flight) requests per model run; a bounded queue waits."""

    enabled: bool = True
    queue_size: int = Field(default=256, ge=0, description="Requests allowed to wait, all models.")
    max_wait_s: float = Field(default=10.0, gt=0, description="Longest wait in the queue -> 429.")


class KeyLimit(BaseModel):
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)


class RateLimitConfig(BaseModel):
    """Per-API-key limits (token buckets). ``default`` applies to unlisted keys. With a Redis
    configured (``cache.redis_url``) the buckets live there, shared by every replica."""

    default: KeyLimit = Field(default_factory=KeyLimit)
    keys: dict[str, KeyLimit] = Field(
        default_factory=dict,
        description="By key id (the first 12 hex digits of the key's sha256); the limits set "
        "on auth.keys entries are merged in.",
    )
    max_tracked_keys: int = Field(default=100_000, ge=1)
    replicas: int = Field(
        default=1,
        ge=1,
        description="Gateway replicas sharing the limits. While Redis cannot be reached, each "
        "replica enforces limit / replicas in-process.",
    )
    redis_timeout_s: float = Field(
        default=0.25, gt=0, description="Longest wait for Redis before falling back in-process."
    )
    redis_retry_s: float = Field(
        default=1.0, ge=0, description="After a Redis failure, in-process for this long."
    )


class ModelBudget(BaseModel):
    tokenizer: str | None = Field(
        default=None, description="Local Hugging Face folder with the model's tokenizer."
    )
    context_len: int | None = Field(
        default=None, ge=1, description="Context length; default: what the engine reports."
    )
    max_tokens: int | None = Field(default=None, ge=1, description="Per-model completion budget.")


class BudgetConfig(BaseModel):
    """max_tokens clamping and prompt-length checks, with each model's own tokenizer."""

    enabled: bool = True
    max_tokens: int = Field(default=1024, ge=1, description="Completion budget for every model.")
    models: dict[str, ModelBudget] = Field(default_factory=dict)
    default_tokenizer: str | None = Field(
        default=None,
        description="Tokenizer folder for models not listed; else the engine's POST /tokenize.",
    )
    tokenize_timeout_s: float = Field(default=5.0, gt=0)
    inline_chars: int = Field(
        default=1024,
        ge=0,
        description="A local tokenizer counts prompts of up to this many characters on the "
        "event loop (about 0.1-0.5 ms), longer ones in a worker thread, whose hop costs more "
        "than counting a short prompt. 0: always in a thread.",
    )


class SharedFlightConfig(BaseModel):
    """Coalescing of identical cacheable misses across replicas (needs ``cache.redis_url``)."""

    enabled: bool = Field(default=True, description="Off: each replica coalesces on its own.")
    lease_ms: int = Field(
        default=3000,
        ge=100,
        description="Lease of a flight's leader, renewed every third of it while it works: "
        "how long followers wait before taking over from a leader that died.",
    )
    answer_ttl_s: float = Field(
        default=10.0,
        gt=0,
        description="How long a finished answer stays readable by followers (and, when the "
        "cache would keep it, by identical requests until its cache insert lands).",
    )
    max_wait_s: float = Field(
        default=300.0, gt=0, description="Longest a follower waits before calling an engine."
    )
    redis_timeout_s: float = Field(default=0.5, gt=0, description="Per Redis call.")
    retry_s: float = Field(default=5.0, ge=0, description="Redis left alone after a failure.")


class RoutingConfig(BaseModel):
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    balancer: BalancerConfig = Field(default_factory=BalancerConfig)
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig)
    rate_limits: RateLimitConfig = Field(default_factory=RateLimitConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    shared_flight: SharedFlightConfig = Field(default_factory=SharedFlightConfig)

    @model_validator(mode="after")
    def _cooldowns(self) -> RoutingConfig:
        if self.breaker.max_cooldown_s < self.breaker.cooldown_s:
            self.breaker.max_cooldown_s = self.breaker.cooldown_s
        return self
