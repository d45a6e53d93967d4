"""Fixtures for the pool tests: a stand-in interpreter that runs fake_vllm.py for
``-m vllm.entrypoints.openai.api_server`` and the real Python for everything else."""

from __future__ import annotations

import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.pool_config import PoolConfig
from tests.engine_pool.helpers import FAKE_VLLM


@pytest.fixture
def fake_python(tmp_path: Path) -> str:
    script = tmp_path / "fake-python"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-m" ] && [ "$2" = "vllm.entrypoints.openai.api_server" ]; then\n'
        "  shift 2\n"
        f'  exec "{sys.executable}" "{FAKE_VLLM}" "$@"\n'
        "fi\n"
        f'exec "{sys.executable}" "$@"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(script)


@pytest.fixture
def fake_pool_config(tmp_path: Path, fake_python: str) -> Callable[..., PoolConfig]:
    """PoolConfig for fake engines; ``engines`` are dicts of EngineSpec fields."""

    def make(engines: list[dict[str, Any]], **overrides: Any) -> PoolConfig:
        data: dict[str, Any] = {
            "engines": engines,
            "publish_path": tmp_path / "engines.json",
            "log_dir": tmp_path / "logs",
            "python": fake_python,
            "startup_timeout_s": 20,
            "stop_grace_s": 5,
            "backoff": {"initial_s": 0.3, "factor": 2.0, "max_s": 5, "jitter": 0.0},
            "warmup": {"timeout_s": 5},
            "health": {"interval_s": 0.2, "timeout_s": 1, "failures": 2},
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = data[key] | value
            else:
                data[key] = value
        return PoolConfig.model_validate(data)

    return make
