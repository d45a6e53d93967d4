"""pytest plugin: one real vLLM engine for the whole test session.

Fixture ``engine`` (session scope) yields an ``EngineEndpoint`` (``.url`` without /v1,
``.model``, ``.base_url`` with /v1). By default it prepares the bundled SmolLM2-135M
(cached under $ENGINE_DATA_DIR or ~/.cache/semcache-gateway) and starts one vLLM server
with small limits, stopped (with its whole process group) when the session ends.
Set TEST_ENGINE_URL (and TEST_ENGINE_MODEL, default smollm2-135m-instruct) to use an
engine that is already running instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from engine.models import DEFAULT_MODEL_NAME, prepare_default_model
from engine.ports import free_port
from engine.process import EngineProcess, EngineStartError
from engine.spec import EngineSpec, detect_device

START_ATTEMPTS = 2
# Small enough for a 2-core CI machine, big enough for the gateway's concurrency tests.
TEST_ENGINE_LIMITS = {
    "max_model_len": 2048,
    "max_num_seqs": 16,
    "cpu_kvcache_space_gib": 1,
    "enforce_eager": True,
}


@dataclass(frozen=True)
class EngineEndpoint:
    url: str
    model: str

    @property
    def base_url(self) -> str:
        """What an OpenAI client takes as base_url."""
        return f"{self.url}/v1"


def _wait_external(endpoint: EngineEndpoint, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            models = httpx.get(f"{endpoint.url}/v1/models", timeout=5.0, trust_env=False)
            ids = [m.get("id") for m in models.json().get("data", [])]
            if endpoint.model in ids:
                return
            last = f"/v1/models lists {ids}"
        except (httpx.HTTPError, ValueError) as error:
            last = repr(error)
        time.sleep(1.0)
    raise RuntimeError(f"TEST_ENGINE_URL={endpoint.url} serves no {endpoint.model!r}: {last}")


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineEndpoint]:
    """The session's real engine (started once, stopped at the end)."""
    external = os.environ.get("TEST_ENGINE_URL")
    if external:
        endpoint = EngineEndpoint(
            url=external.rstrip("/").removesuffix("/v1"),
            model=os.environ.get("TEST_ENGINE_MODEL", DEFAULT_MODEL_NAME),
        )
        _wait_external(endpoint)
        yield endpoint
        return
    spec = EngineSpec.for_device(
        detect_device(),
        model=str(prepare_default_model()),
        served_model_name=DEFAULT_MODEL_NAME,
        port=free_port(),
        **TEST_ENGINE_LIMITS,
    )
    folder = tmp_path_factory.mktemp("engine")
    # vLLM on a busy 2-core box has been seen to hang in worker start-up (a quiet start takes
    # ~40 s): give each try 5 minutes and try again on a fresh port before giving up.
    for attempt in range(1, START_ATTEMPTS + 1):
        process = EngineProcess(spec, folder / f"engine-{attempt}.log", startup_timeout=300.0)
        try:
            process.start_sync()
        except EngineStartError:  # start_sync has stopped what it started
            if attempt == START_ATTEMPTS:
                raise
            spec = spec.model_copy(update={"port": free_port()})
            continue
        break
    try:
        yield EngineEndpoint(url=process.url, model=process.model)
    finally:
        process.stop()
