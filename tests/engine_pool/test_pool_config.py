"""pool.yaml parsing: replicas, ports, GPU pinning, relative paths, backoff arithmetic."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from engine.pool_config import BackoffConfig, PoolConfig, load_pool_config
from engine.spec import EngineSpec


def write(tmp_path: Path, data: dict[str, object]) -> Path:
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_replicas_get_consecutive_ports_and_their_own_gpus(tmp_path: Path) -> None:
    config = load_pool_config(
        write(
            tmp_path,
            {
                "publish_path": "run/engines.json",
                "engines": [
                    {
                        "name": "llama",
                        "model": "/m/llama",
                        "device": "gpu",
                        "replicas": 2,
                        "port": 8001,
                        "tensor_parallel_size": 2,
                        "max_num_seqs": 128,
                        "kv_cache_dtype": "fp8",
                    }
                ],
            },
        )
    )
    engines = config.engine_specs()
    assert [engine_id for engine_id, _ in engines] == ["llama-0", "llama-1"]
    assert [spec.port for _, spec in engines] == [8001, 8002]
    assert [spec.env()["CUDA_VISIBLE_DEVICES"] for _, spec in engines] == ["0,1", "2,3"]
    argv = engines[1][1].argv("python")
    for flag, value in [
        ("--tensor-parallel-size", "2"),
        ("--max-num-seqs", "128"),
        ("--kv-cache-dtype", "fp8"),
        ("--gpu-memory-utilization", "0.9"),
    ]:
        assert argv[argv.index(flag) + 1] == value
    assert config.publish_path == tmp_path / "run" / "engines.json"
    assert config.log_dir == tmp_path / "logs"


def test_cpu_defaults_free_ports_and_explicit_devices(tmp_path: Path) -> None:
    config = PoolConfig.model_validate(
        {
            "engines": [
                {"model": "/m/a"},
                {"model": "/m/b", "device": "gpu", "cuda_visible_devices": "3", "env": {"X": "1"}},
            ]
        }
    )
    (id_a, a), (id_b, b) = config.engine_specs()
    assert (id_a, id_b) == ("engine-0", "engine-1")
    assert a.port != b.port
    assert isinstance(a, EngineSpec)
    assert a.enforce_eager and a.env()["VLLM_CPU_KVCACHE_SPACE"] == "2"  # CPU defaults
    assert b.env()["CUDA_VISIBLE_DEVICES"] == "3" and b.env()["X"] == "1"
    assert "CUDA_VISIBLE_DEVICES" not in a.env()


def test_mistakes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):  # a typo in an EngineSpec field
        PoolConfig.model_validate({"engines": [{"model": "/m", "max_num_seq": 4}]}).engine_specs()
    with pytest.raises(ValidationError):  # a typo at the top level
        PoolConfig.model_validate({"engines": [{"model": "/m"}], "publish": "x"})
    with pytest.raises(ValidationError):
        PoolConfig.model_validate({"engines": []})
    clash = PoolConfig.model_validate(
        {"engines": [{"model": "/m", "port": 8000}, {"model": "/n", "port": 8000}]}
    )
    with pytest.raises(ValueError, match="port 8000"):
        clash.engine_specs()
    same = PoolConfig.model_validate(
        {"engines": [{"name": "a", "model": "/m"}, {"name": "a", "model": "/n"}]}
    )
    with pytest.raises(ValueError, match="unique"):
        same.engine_specs()


def test_backoff_delays() -> None:
    backoff = BackoffConfig(initial_s=2, factor=2, max_s=30)
    assert [backoff.delay(n) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]
    assert backoff.delay(10_000) == 30  # no overflow
