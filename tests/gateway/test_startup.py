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
import asyncio, json, sys
from threadpoolctl import threadpool_info, threadpool_limits
from gateway.app import create_app
from gateway.config import BackendConfig, Settings

def blas_threads():
    return sorted({lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"})

async def main():
    threadpool_limits(2, user_api="blas")
    before = blas_threads()
    app = create_app(Settings(backends=[BackendConfig(url=sys.argv[1])]))
    async with app.router.lifespan_context(app):
        print(json.dumps({"before": before, "running": blas_threads()}))

asyncio.run(main())
"""


def test_numpy_blas_runs_on_one_thread_once_the_gateway_starts() -> None:
    # Threaded BLAS spins between the cache's small matrix products and starved the event loop
    # and the embedder on 2 cores (docs/benchmarks.md). OpenBLAS keeps the setting per thread:
    # the app starts on the thread whose event loop runs the cache's searches.
    with running_fault_engine() as engine:
        done = subprocess.run(
            [sys.executable, "-c", PROBE, engine.url],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    threads = json.loads(done.stdout.strip().splitlines()[-1])
    assert threads == {"before": [2], "running": [1]}
