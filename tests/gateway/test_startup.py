"""What the gateway sets up for its process when it starts."""

from __future__ import annotations

from threadpoolctl import threadpool_info, threadpool_limits

from gateway.app import create_app
from gateway.config import BackendConfig, Settings
from tests.support.stub_engines import running_fault_engine


def blas_threads() -> set[int]:
    return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


async def test_numpy_blas_runs_on_one_thread_once_the_gateway_starts() -> None:
    # Threaded BLAS spins between the cache's small matrix products and starved the event loop
    # and the embedder on 2 cores (docs/benchmarks.md). OpenBLAS keeps the setting per thread:
    # the app starts here, on the thread whose event loop runs the cache's searches.
    threadpool_limits(2, user_api="blas")
    assert blas_threads() == {2}
    with running_fault_engine() as engine:
        app = create_app(Settings(backends=[BackendConfig(url=engine.url)]))
        async with app.router.lifespan_context(app):
            assert blas_threads() == {1}
