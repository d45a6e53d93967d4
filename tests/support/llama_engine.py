"""pytest plugin: real llama.cpp ``llama-server`` engines, the second engine kind.

``llama_engine`` (session scope) is one llama-server serving the bundled SmolLM2-135M GGUF under
the name the vLLM engine uses (``smollm2-135m-instruct``); ``llama_gateway`` is the gateway in
front of it. ``llama_engine_process()`` starts another one, for tests that kill engines.
The binary is built once per machine (engine/llama_cpp_build.py, cached under the data
directory); `make test` builds it before pytest starts, so a session only finds it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from engine.llama_cpp_build import ensure_llama_server
from engine.llama_cpp_spec import LlamaServerSpec
from engine.models import DEFAULT_MODEL_NAME
from engine.ports import free_port
from engine.process import EngineProcess
from gateway.config import BackendConfig
from tests.support.cache_http import auth_settings
from tests.support.engine import EngineEndpoint
from tests.support.gateway import running_gateway


def llama_spec(port: int | None = None) -> LlamaServerSpec:
    """The bundled GGUF on ``port`` (a free one by default), under the vLLM engine's name."""
    return LlamaServerSpec(
        served_model_name=DEFAULT_MODEL_NAME,
        port=port or free_port(),
        binary=str(ensure_llama_server()),
        ctx_size=2048,  # 4 slots share 2 048 tokens of KV cache
        parallel=4,
    )


@contextmanager
def llama_engine_process(folder: Path, port: int | None = None) -> Iterator[EngineProcess]:
    """A started llama-server (its whole process group is stopped on exit)."""
    spec = llama_spec(port)
    process = EngineProcess(spec, folder / f"llama-{spec.port}.log", startup_timeout=120.0)
    process.start_sync()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def llama_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineEndpoint]:
    with llama_engine_process(tmp_path_factory.mktemp("llama")) as process:
        yield EngineEndpoint(url=process.url, model=process.model)


@pytest.fixture(scope="session")
def llama_gateway(llama_engine: EngineEndpoint) -> Iterator[str]:
    """The gateway (in-process cache, real embedder, tenant keys of tests/support/cache_http)
    in front of the session's llama-server."""
    backends = [BackendConfig(url=llama_engine.url)]
    with running_gateway(backends=backends, auth=auth_settings()) as url:
        yield url
