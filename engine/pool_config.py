"""Pool configuration: which engines to run and how to supervise them (``pool.yaml``).

An entry under ``engines`` is an engine spec plus ``name``, ``replicas``,
``cuda_visible_devices`` and ``env``. ``kind`` picks the spec: ``vllm`` (the default; field names
of ``engine/spec.py``) or ``llama.cpp`` (``engine/llama_cpp_spec.py``). ``replicas: N`` expands
one entry into N engines on consecutive ports; on GPU each replica gets its own group of
``tensor_parallel_size`` GPUs (replica i: GPUs i*tp .. i*tp+tp-1) unless
``cuda_visible_devices`` is given. An engine without a ``port`` gets a free one.

Example::

    publish_path: /run/semcache/engines.json
    engines:
      - name: smol
        model: /models/smollm2-135m-instruct-awq
        served_model_name: smollm2-135m-instruct
        device: gpu
        replicas: 2
        port: 8001
      - name: llama
        kind: llama.cpp          # the bundled GGUF when no model is given
        served_model_name: smollm2-135m-instruct
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.kinds import KINDS, ServerSpec
from engine.llama_cpp_spec import LlamaServerSpec
from engine.ports import free_port
from engine.spec import EngineSpec

POOL_FIELDS = ("name", "replicas", "cuda_visible_devices", "env")


class PoolEngineSpec(EngineSpec):
    """An EngineSpec with extra environment (GPU pinning, vLLM env knobs).

    EngineProcess starts the server with ``{**os.environ, **spec.env()}``, so adding to
    ``env()`` is all it takes."""

    extra_env: dict[str, str] = Field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return super().env() | self.extra_env


class PoolLlamaServerSpec(LlamaServerSpec):
    """A LlamaServerSpec with extra environment (GPU pinning for a CUDA build)."""

    extra_env: dict[str, str] = Field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return super().env() | self.extra_env


class BackoffConfig(BaseModel):
    """Delay before restart n (1-based): min(initial_s * factor**(n-1), max_s), +/- jitter."""

    model_config = ConfigDict(extra="forbid")

    initial_s: float = Field(default=2.0, gt=0)
    factor: float = Field(default=2.0, ge=1.0)
    max_s: float = Field(default=120.0, gt=0)
    jitter: float = Field(default=0.1, ge=0.0, le=1.0, description="fraction, spread both ways")
    reset_after_s: float = Field(
        default=300.0, ge=0, description="ready this long: the failure count starts again at 0"
    )
    max_restarts: int | None = Field(
        default=None, ge=0, description="consecutive failures before giving up (None: never)"
    )

    def delay(self, failures: int) -> float:
        """Base delay (no jitter) after ``failures`` consecutive failures (>= 1)."""
        exponent = max(0, failures - 1)
        # Cap the exponent: factor**big overflows a float long before it matters.
        return float(min(self.initial_s * self.factor ** min(exponent, 64), self.max_s))


class WarmupConfig(BaseModel):
    """One request sent to each engine before it is published as ready (no cold first user)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    prompt: str = "Hello"
    max_tokens: int = Field(default=4, ge=1)
    timeout_s: float = Field(default=120.0, gt=0)


class HealthConfig(BaseModel):
    """How a ready engine is watched: /health every interval; after ``failures`` misses in a
    row it is treated as hung and restarted."""

    model_config = ConfigDict(extra="forbid")

    interval_s: float = Field(default=5.0, gt=0)
    timeout_s: float = Field(default=5.0, gt=0)
    failures: int = Field(default=3, ge=1)


class EngineEntry(BaseModel):
    """One entry of ``engines:`` (EngineSpec fields are kept in ``spec``)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    replicas: int = Field(default=1, ge=1)
    cuda_visible_devices: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    spec: dict[str, Any]

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        """Accept the flat YAML form: pool keys at top level, everything else is the spec."""
        if not isinstance(data, dict) or "spec" in data:
            return data
        pool = {key: data[key] for key in POOL_FIELDS if key in data}
        return pool | {"spec": {k: v for k, v in data.items() if k not in POOL_FIELDS}}


class PoolConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    engines: list[EngineEntry] = Field(min_length=1)
    publish_path: Path | None = Field(
        default=None, description="JSON file with the live engine list (atomic rewrites)"
    )
    log_dir: Path = Field(default=Path("logs"), description="one log file per engine")
    advertise_host: str | None = Field(
        default=None, description="host in published URLs (default: each engine's host)"
    )
    python: str | None = Field(
        default=None, description="interpreter that runs vLLM (default: this one)"
    )
    startup_timeout_s: float = Field(default=600.0, gt=0)
    stop_grace_s: float = Field(default=20.0, gt=0)
    min_ready: int | None = Field(
        default=None, ge=0, description="engines ready before the pool counts as up (None: all)"
    )
    start_concurrency: int | None = Field(
        default=None, ge=1, description="engines starting at once (None: all; 1 on small CPUs)"
    )
    backoff: BackoffConfig = Field(default_factory=BackoffConfig)
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)

    def engine_specs(self) -> list[tuple[str, ServerSpec]]:
        """(engine id, spec) for every engine, replicas expanded, ports assigned."""
        out: list[tuple[str, ServerSpec]] = []
        used: set[int] = set()
        for index, entry in enumerate(self.engines):
            out += expand_entry(entry, f"engine-{index}", used)
        ids = [engine_id for engine_id, _ in out]
        if len(set(ids)) != len(ids):
            raise ValueError(f"engine names must be unique, got {ids}")
        return out


def expand_entry(
    entry: EngineEntry, default_name: str, used: set[int]
) -> list[tuple[str, ServerSpec]]:
    """The engines of one entry, each with its id."""
    fields = dict(entry.spec)
    kind = fields.pop("kind", "vllm")
    if kind not in KINDS:
        raise ValueError(f"unknown engine kind {kind!r} (known: {', '.join(KINDS)})")
    device = fields.pop("device", "cpu")
    base_port = fields.pop("port", None)
    tp = int(fields.get("tensor_parallel_size", 1))
    name = entry.name or default_name
    out: list[tuple[str, ServerSpec]] = []
    for replica in range(entry.replicas):
        port = base_port + replica if base_port is not None else _unused_free_port(used)
        if port in used:
            raise ValueError(f"port {port} is used by two engines")
        used.add(port)
        env = dict(entry.env)
        if device == "gpu":
            if entry.cuda_visible_devices is not None:
                env["CUDA_VISIBLE_DEVICES"] = entry.cuda_visible_devices
            elif entry.replicas > 1:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(
                    str(gpu) for gpu in range(replica * tp, (replica + 1) * tp)
                )
        spec: ServerSpec
        if kind == "llama.cpp":
            spec = PoolLlamaServerSpec(device=device, **fields, port=port, extra_env=env)
        else:
            spec = PoolEngineSpec.for_device(device, **fields, port=port, extra_env=env)
        out.append((name if entry.replicas == 1 else f"{name}-{replica}", spec))
    return out


def _unused_free_port(used: set[int]) -> int:
    while True:
        port = free_port()
        if port not in used:
            return port


def load_pool_config(path: Path) -> PoolConfig:
    """Read pool.yaml; relative paths in it are relative to the file's folder."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    config = PoolConfig.model_validate(data)
    base = Path(path).resolve().parent
    updates: dict[str, Any] = {"log_dir": _under(base, config.log_dir)}
    if config.publish_path is not None:
        updates["publish_path"] = _under(base, config.publish_path)
    return config.model_copy(update=updates)


def _under(base: Path, path: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else base / path
