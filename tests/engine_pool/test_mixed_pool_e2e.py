"""A mixed pool: one vLLM engine and one llama.cpp llama-server, both real, serving the bundled
SmolLM2-135M under one model name, supervised by EnginePool (readiness, warm-up, restarts) and
followed by the real gateway through the published engine list. Each engine is killed in turn
(SIGKILL to its process group); clients keep getting answers from the other one, and the pool
brings the killed llama-server back."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from engine.llama_cpp_build import ensure_llama_server
from engine.models import DEFAULT_MODEL_NAME, prepare_default_model
from engine.pool import EnginePool
from engine.pool_config import PoolConfig
from engine.registry import EngineState
from tests.support.gateway import running_gateway

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM not installed"),
]


def _config(tmp_path: Path) -> PoolConfig:
    return PoolConfig.model_validate(
        {
            "publish_path": tmp_path / "engines.json",
            "log_dir": tmp_path / "logs",
            "startup_timeout_s": 600,
            "backoff": {"initial_s": 0.5, "jitter": 0.0},
            "health": {"interval_s": 1.0, "failures": 2},
            "engines": [
                {
                    "name": "vllm",
                    "model": str(prepare_default_model()),
                    "served_model_name": DEFAULT_MODEL_NAME,
                    "device": "cpu",
                    "max_num_seqs": 8,
                    "cpu_kvcache_space_gib": 1,
                },
                {
                    "name": "llama",
                    "kind": "llama.cpp",
                    "served_model_name": DEFAULT_MODEL_NAME,
                    "binary": str(ensure_llama_server()),
                },
            ],
        }
    )


async def _counter(client: httpx.AsyncClient, url: str, name: str) -> float:
    """A counter of the engine's /metrics (vLLM's or llama-server's), summed over label sets."""
    text = (await client.get(f"{url}/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


async def _ask(client: httpx.AsyncClient, gateway: str, n: int, tag: str) -> list[str]:
    """n chat requests through the gateway, each of which must succeed; their answers."""
    answers = []
    for i in range(n):
        r = await client.post(
            f"{gateway}/v1/chat/completions",
            json={
                "model": DEFAULT_MODEL_NAME,
                "messages": [{"role": "user", "content": f"Say hello to {tag} number {i}."}],
                "max_tokens": 6,
                "temperature": 0,
            },
        )
        assert r.status_code == 200, r.text
        text = r.json()["choices"][0]["message"]["content"]
        assert text.strip() and "Ġ" not in text and "<|im_" not in text
        answers.append(text)
    return answers


async def _until(check: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


async def test_mixed_pool_fails_over_between_vllm_and_llama_cpp(tmp_path: Path) -> None:
    config = _config(tmp_path)
    async with EnginePool(config, ready_timeout_s=900) as pool:
        records = {r.id: r for r in pool.records}
        assert all(
            r.state == EngineState.READY and r.warmup_s is not None for r in records.values()
        )
        urls = {engine_id: record.url for engine_id, record in records.items()}
        with running_gateway(
            backends_file=config.publish_path,
            cache={"enabled": False},
            routing={"balancer": {"strategy": "round_robin", "scrape_metrics": False}},
        ) as gateway:
            async with httpx.AsyncClient(timeout=120, trust_env=False) as client:
                await _until(
                    lambda: len(pool.snapshot().backends) == 2, 10, "both engines published"
                )
                vllm_before = await _counter(client, urls["vllm"], "vllm:request_success_total")
                llama_before = await _counter(
                    client, urls["llama"], "llamacpp:tokens_predicted_total"
                )
                await _ask(client, gateway, 4, "both")
                assert await _counter(client, urls["vllm"], "vllm:request_success_total") > (
                    vllm_before
                )
                assert await _counter(client, urls["llama"], "llamacpp:tokens_predicted_total") > (
                    llama_before
                )

                llama = pool.process("llama")
                assert llama is not None and llama.pid is not None
                os.killpg(llama.pid, signal.SIGKILL)
                served = await _counter(client, urls["vllm"], "vllm:request_success_total")
                await _ask(client, gateway, 4, "vllm")  # the gateway fails over to vLLM
                assert await _counter(client, urls["vllm"], "vllm:request_success_total") >= (
                    served + 4
                )

                def llama_back() -> bool:
                    record = next(r for r in pool.records if r.id == "llama")
                    return record.state == EngineState.READY and record.restarts == 1

                await _until(llama_back, 60, "the pool did not restart llama-server")
                await _until(
                    lambda: len(pool.snapshot().backends) == 2, 10, "llama-server republished"
                )
                # The gateway stopped routing to it at the refused connection; its next probe
                # lets it in again: wait until a request through the gateway lands there.
                back_at = await _counter(client, urls["llama"], "llamacpp:tokens_predicted_total")
                deadline = time.monotonic() + 30
                while (
                    await _counter(client, urls["llama"], "llamacpp:tokens_predicted_total")
                    == back_at
                ):
                    assert time.monotonic() < deadline, "the gateway never routed to it again"
                    await _ask(client, gateway, 1, "again")

                vllm = pool.process("vllm")
                assert vllm is not None and vllm.pid is not None
                os.killpg(vllm.pid, signal.SIGKILL)
                predicted = await _counter(client, urls["llama"], "llamacpp:tokens_predicted_total")
                await _ask(client, gateway, 4, "llama")  # and now to llama-server
                assert await _counter(client, urls["llama"], "llamacpp:tokens_predicted_total") > (
                    predicted
                )
