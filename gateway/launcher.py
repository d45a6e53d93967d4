"""``python -m gateway up``: the whole stack on one machine, in the foreground.

Prepares the default model (once), starts one vLLM engine, serves the gateway in front of it,
and on Ctrl-C or SIGTERM stops the gateway and then the engine. Signals are handled here, not
by uvicorn, so that a signal during the engine's start also stops everything cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from gateway.config import BackendConfig, Settings
from gateway.server import uvicorn_config


class _ForegroundServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the launcher owns signals
        yield


def run_stack(settings: Settings, data_dir: str | None = None) -> int:
    try:
        return asyncio.run(_run(settings, data_dir))
    except KeyboardInterrupt:
        return 130


async def _run(settings: Settings, data_dir: str | None) -> int:
    from engine.models import DEFAULT_MODEL_NAME, default_data_dir, prepare_default_model
    from engine.ports import free_port
    from engine.process import EngineProcess
    from engine.spec import EngineSpec, detect_device

    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    server: uvicorn.Server | None = None

    def on_signal() -> None:
        if server is not None:
            server.should_exit = True
        else:
            main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)

    started = time.monotonic()
    data = Path(data_dir) if data_dir else default_data_dir()
    try:
        _say(f"preparing the default model under {data} ...")
        model_dir = await asyncio.to_thread(prepare_default_model, data)
        spec = EngineSpec.for_device(
            detect_device(),
            model=str(model_dir),
            served_model_name=DEFAULT_MODEL_NAME,
            port=free_port(),
        )
        _say(f"starting vLLM on {spec.url} (log: {data / 'logs' / 'engine.log'}) ...")
        async with EngineProcess(spec, data / "logs" / "engine.log") as engine:
            backend = BackendConfig(url=engine.url, models=[spec.name])
            budget = settings.routing.budget.model_copy(
                update={"default_tokenizer": str(model_dir)}
            )
            routing = settings.routing.model_copy(update={"budget": budget})
            served = settings.model_copy(update={"backends": [backend], "routing": routing})
            server = _ForegroundServer(uvicorn_config(served))
            banner = asyncio.create_task(_banner(server, settings, spec.name, started))
            await server.serve()
            banner.cancel()
    except asyncio.CancelledError:
        _say("stopped before the gateway was up")
        return 130
    _say("stopped")
    return 0


async def _banner(server: uvicorn.Server, settings: Settings, model: str, started: float) -> None:
    while not server.started:
        await asyncio.sleep(0.05)
    base = f"http://{settings.host}:{settings.port}/v1"
    _say(
        f"ready in {time.monotonic() - started:.0f} s. Point an OpenAI client at it:\n"
        f'    OpenAI(base_url="{base}", api_key="unused")  # model="{model}"\n'
        f"    curl {base}/chat/completions -H 'content-type: application/json' "
        f'-d \'{{"model": "{model}", "messages": [{{"role": "user", "content": "Hi"}}]}}\'\n'
        "Ctrl-C stops the gateway and the engine."
    )


def _say(message: str) -> None:
    print(f"[gateway up] {message}", file=sys.stderr, flush=True)
