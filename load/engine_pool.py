"""The supervised engine pool (``python -m engine.pool_cli``) as a benchmark's backend.

The pool runs in its own process session, so it outlives the command that started it (on the
lent GPU machine such a process runs on until the machine goes back): a second command finds
it through its pid file and published engine list and reuses it instead of paying vLLM's
start-up again. ``stop()`` ends it (SIGTERM to its process group: the pool stops its engines).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from engine.pool_config import PoolConfig, load_pool_config

ROOT = Path(__file__).resolve().parent.parent
# What the engines' logs say about memory and kernels (vLLM 0.26 wording).
LOG_FACTS = {
    "kv_cache_tokens": re.compile(r"GPU KV cache size: ([\d,]+) tokens"),
    "max_concurrency": re.compile(r"Maximum concurrency for [\d,]+ tokens per request: ([\d.]+)x"),
    "available_kv_gib": re.compile(r"Available KV cache memory: ([\d.]+) GiB"),
    "blocks_fitting": re.compile(r"Overriding num_gpu_blocks=(\d+) with num_gpu_blocks_override"),
    "blocks_override": re.compile(r"with num_gpu_blocks_override=(\d+)"),
    "model_load_gib": re.compile(r"Model loading took ([\d.]+) GiB"),
    "attention_backend": re.compile(r"Using (\w+) (?:attention )?backend"),
    "linear_kernel": re.compile(r"Using (\w+) for CompressedTensorsWNA16"),
}


@dataclass(slots=True)
class RunningPool:
    config: PoolConfig
    urls: list[str]
    model: str
    pid: int | None
    reused: bool
    ready_s: float
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def pid_file(self) -> Path:
        return pid_file(self.config)


def pid_file(config: PoolConfig) -> Path:
    base = config.publish_path.parent if config.publish_path else config.log_dir
    return base / "pool.pid"


def published(config: PoolConfig) -> list[dict[str, Any]]:
    """The ready engines the pool has published (empty when none or no file)."""
    if config.publish_path is None or not config.publish_path.is_file():
        return []
    try:
        backends = json.loads(config.publish_path.read_text()).get("backends") or []
    except (OSError, ValueError):
        return []
    return [b for b in backends if isinstance(b, dict)]


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=3, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _running_pid(config: PoolConfig) -> int | None:
    try:
        pid = int(pid_file(config).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def start(config_path: Path, timeout_s: float = 900.0, log: Path | None = None) -> RunningPool:
    """The pool of ``config_path``: the one already running (all engines ready and healthy),
    else a fresh one started in its own session; returns once every engine is ready."""
    config = load_pool_config(config_path)
    expected = len(config.engine_specs())
    started = time.monotonic()
    pid = _running_pid(config)
    ready = published(config)
    if pid and len(ready) == expected and all(healthy(b["url"]) for b in ready):
        return _running(config, ready, pid, reused=True, ready_s=0.0)
    if pid:
        raise RuntimeError(f"a pool (pid {pid}) is running but not ready: stop it first")
    if config.publish_path is not None:
        config.publish_path.unlink(missing_ok=True)
    log = log or config.log_dir / "pool.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.pool_cli", "--config", str(config_path)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file(config).parent.mkdir(parents=True, exist_ok=True)
    pid_file(config).write_text(f"{proc.pid}\n")
    while len(ready := published(config)) < expected:
        if proc.poll() is not None:
            raise RuntimeError(f"engine pool exited ({proc.returncode}): {_tail(log)}")
        if time.monotonic() - started > timeout_s:
            stop(config)
            raise RuntimeError(f"engine pool not ready after {timeout_s:.0f} s: {_tail(log)}")
        time.sleep(1.0)
    return _running(config, ready, proc.pid, reused=False, ready_s=time.monotonic() - started)


def _running(
    config: PoolConfig, ready: list[dict[str, Any]], pid: int, *, reused: bool, ready_s: float
) -> RunningPool:
    models = ready[0].get("models") or [""]
    return RunningPool(
        config=config,
        urls=sorted(str(b["url"]) for b in ready),
        model=str(models[0]),
        pid=pid,
        reused=reused,
        ready_s=round(ready_s, 1),
        facts=log_facts(config.log_dir),
    )


def stop(config: PoolConfig, timeout_s: float = 60.0) -> None:
    """SIGTERM to the pool's process group, SIGKILL after ``timeout_s``."""
    pid = _running_pid(config)
    if pid is None:
        return
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.5)
        _reap(pid)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
    pid_file(config).unlink(missing_ok=True)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def log_facts(log_dir: Path) -> dict[str, dict[str, Any]]:
    """Per engine log: the first match of each LOG_FACTS pattern."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(log_dir.glob("*.log")):
        if path.name == "pool.log":
            continue
        text = path.read_text(errors="replace")
        found: dict[str, Any] = {}
        for name, pattern in LOG_FACTS.items():
            match = pattern.search(text)
            if match:
                value = match.group(1).replace(",", "")
                found[name] = float(value) if re.fullmatch(r"[\d.]+", value) else value
        out[path.stem] = found
    return out


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
