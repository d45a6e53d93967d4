"""``python -m engine.pool_cli`` as a user runs it: YAML in, engines up, published file, and
SIGTERM (clean stop) or SIGKILL (the pool dies) leaves no engine process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from engine.process import group_members
from engine.registry import PublishedPool, read_published
from tests.engine_pool.helpers import alive, fake_engine

ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, fake_python: str) -> Path:
    config = {
        "publish_path": "engines.json",  # relative: next to the YAML file
        "log_dir": "logs",
        "python": fake_python,
        "startup_timeout_s": 20,
        "backoff": {"initial_s": 0.2, "jitter": 0},
        "health": {"interval_s": 0.5},
        "engines": [
            fake_engine("a", tmp_path, "--fake-spawn-child"),
            {**fake_engine("b", tmp_path, "--fake-spawn-child"), "replicas": 2},
        ],
    }
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_pool(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "engine.pool_cli", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_published(path: Path, count: int, proc: subprocess.Popen[str]) -> PublishedPool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        published = read_published(path)
        if published is not None and len(published.backends) == count:
            return published
        if proc.poll() is not None:
            raise AssertionError(f"pool exited: {proc.communicate()[0]}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"not {count} engines ready: {proc.communicate()[0]}")


def engine_pids(published: PublishedPool) -> list[int]:
    pids: list[int] = []
    for record in published.engines:
        assert record.pid is not None
        pids += group_members(record.pid)
        pids.append(httpx.get(f"{record.url}/fake/info", trust_env=False).json()["child_pid"])
    return pids


def wait_dead(pids: list[int], timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.1)
    return [pid for pid in pids if alive(pid)]


def test_print_commands(tmp_path: Path, fake_python: str) -> None:
    config = write_config(tmp_path, fake_python)
    out = subprocess.run(
        [sys.executable, "-m", "engine.pool_cli", "--config", str(config), "--print-commands"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.count("vllm.entrypoints.openai.api_server") == 3
    assert "# b-1: http://127.0.0.1:" in out
    assert "--enable-prefix-caching" in out


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_signal_leaves_no_orphans(tmp_path: Path, fake_python: str, how: signal.Signals) -> None:
    config = write_config(tmp_path, fake_python)
    proc = start_pool(config)
    try:
        published = wait_published(tmp_path / "engines.json", 3, proc)
        assert sorted(b.id for b in published.backends) == ["a", "b-0", "b-1"]
        pids = engine_pids(published)
        assert len(pids) >= 6 and all(alive(pid) for pid in pids)
        proc.send_signal(how)
        code = proc.wait(timeout=30)
        output = proc.communicate()[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert wait_dead(pids) == [], output
    if how == signal.SIGTERM:
        assert code == 0, output
        assert "[engine pool] stopped" in output
        final = json.loads((tmp_path / "engines.json").read_text())
        assert final["backends"] == []
        assert {e["state"] for e in final["engines"]} == {"stopped"}
    else:
        assert code == -signal.SIGKILL
