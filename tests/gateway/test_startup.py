"""What the gateway sets up for its process when it starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.stub_engines import running_fault_engine

ROOT = Path(__file__).resolve().parents[2]
# A fresh interpreter: what earlier tests did to this process's BLAS cannot blur the result.
PROBE = """
import asyncio, gc, json, sys
from threadpoolctl import threadpool_info, threadpool_limits
from gateway.app import create_app
from gateway.config import BackendConfig, Settings

def blas_threads():
    return sorted({lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"})

async def main():
    threadpool_limits(2, user_api="blas")
    before = blas_threads()
    app = create_app(Settings(backends=[BackendConfig(url=sys.argv[1])]))
    frozen = gc.get_freeze_count()
    async with app.router.lifespan_context(app):
        running = {"frozen": [frozen, gc.get_freeze_count()], "gc": gc.isenabled()}
        print(json.dumps({"before": before, "running": blas_threads(), **running}))

asyncio.run(main())
"""


def probe() -> dict[str, object]:
    with running_fault_engine() as engine:
        done = subprocess.run(
            [sys.executable, "-c", PROBE, engine.url],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    found: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def test_numpy_blas_runs_on_one_thread_once_the_gateway_starts() -> None:
    # Threaded BLAS spins between the cache's small matrix products and starved the event loop
    # and the embedder on 2 cores (docs/benchmarks.md). OpenBLAS keeps the setting per thread:
    # the app starts on the thread whose event loop runs the cache's searches.
    found = probe()
    assert (found["before"], found["running"]) == ([2], [1])


def test_what_the_gateway_loads_at_startup_is_frozen_out_of_the_collector() -> None:
    # A full collection walked the models' half a million objects: ~300 ms pauses under load
    # (docs/benchmarks.md). Frozen, they are never walked; the collector itself stays on.
    found = probe()
    frozen = found["frozen"]
    assert isinstance(frozen, list) and frozen[0] == 0 and frozen[1] > 10_000
    assert found["gc"] is True
