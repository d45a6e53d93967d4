"""LlamaServerSpec: one llama.cpp ``llama-server``, described as data, turned into its command line.

The second engine kind next to vLLM (engine/spec.py). llama-server serves GGUF files, llama.cpp's
native format, so the bundled SmolLM2-135M GGUF is served as it is, with no conversion. Flag
spellings are those of llama.cpp's tools/server (llama-cpp-python 0.3.36's vendored tree):

- ``--alias`` is always given, so /v1/models lists exactly ``name`` (the pool's readiness check
  waits for it) whatever the file is called;
- ``--kv-unified``: one KV buffer of ``ctx_size`` tokens shared by the ``parallel`` slots, so
  each request may use the whole context (without it each slot gets ctx_size / parallel);
- ``--jinja``: the chat template from the GGUF's metadata, run by llama.cpp's Jinja engine;
- ``--metrics``: Prometheus /metrics (``llamacpp:*``), ``--no-webui``, ``--offline``.

A spec has the same surface as EngineSpec where EngineProcess, the pool and its supervisors
look (``name``, ``url``, ``host``, ``port``, ``argv()``, ``env()``), so both kinds run under
the same launch, readiness (/health, /v1/models), warm-up and restart logic.
"""

from __future__ import annotations

import sys
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.llama_cpp_build import BINARY as LLAMA_SERVER
from engine.llama_cpp_build import build_dir, llama_server_path
from engine.models import DEFAULT_MODEL_NAME, gguf_path
from engine.spec import Device


class LlamaServerSpec(BaseModel):
    """What to run: a GGUF model, where to listen, context and slots."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["llama.cpp"] = "llama.cpp"
    model: str | None = Field(default=None, description="GGUF file (None: the bundled SmolLM2)")
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    device: Device = "cpu"
    binary: str | None = Field(
        default=None, description="llama-server to run (None: $LLAMA_SERVER_BIN or the build)"
    )
    ctx_size: int = Field(default=2048, ge=64, description="KV cache tokens, shared by all slots")
    parallel: int = Field(default=4, ge=1, description="requests decoded at once (slots)")
    # One thread by default: llama.cpp's default (every core) spins in OpenMP barriers, and on
    # a small machine shared with vLLM and the embedder that was seen to drop SmolLM2-135M from
    # ~40 to 0.4 tokens/s. None: llama.cpp's default; give more on a dedicated many-core host.
    threads: int | None = Field(default=1, ge=1)
    n_gpu_layers: int | None = Field(default=None, ge=0, description="only with a GPU build")
    jinja: bool = True
    metrics: bool = True
    offline: bool = True
    extra_args: list[str] = Field(default_factory=list)

    @property
    def name(self) -> str:
        """The model name clients send (what /v1/models lists)."""
        if self.served_model_name:
            return self.served_model_name
        return self.model or DEFAULT_MODEL_NAME

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def model_path(self) -> str:
        return self.model or str(gguf_path())

    def binary_path(self) -> str:
        """The binary to run; where the build would put it when nothing is built yet."""
        if self.binary:
            return self.binary
        found = llama_server_path()
        return str(found if found is not None else build_dir() / LLAMA_SERVER)

    def argv(self, python: str = sys.executable) -> list[str]:
        """The full command line (``python`` is ignored: llama-server is a native binary)."""
        args = [self.binary_path(), "--model", self.model_path(), "--alias", self.name]
        args += ["--host", self.host, "--port", str(self.port)]
        args += ["--ctx-size", str(self.ctx_size), "--parallel", str(self.parallel)]
        args += ["--kv-unified", "--jinja" if self.jinja else "--no-jinja", "--no-webui"]
        if self.metrics:
            args.append("--metrics")
        if self.offline:
            args.append("--offline")
        if self.threads is not None:
            args += ["--threads", str(self.threads)]
        if self.n_gpu_layers is not None:
            args += ["--n-gpu-layers", str(self.n_gpu_layers)]
        return args + list(self.extra_args)

    def env(self) -> dict[str, str]:
        """Variables to add to the inherited environment (none: everything is a flag)."""
        return {}
