"""``python -m engine pool --config pool.yaml``: run a supervised engine pool in the foreground.

Wiring for engine/cli.py: ``add_pool_arguments(subparsers.add_parser("pool", ...))`` and
``run_pool(args)``. Until then ``python -m engine.pool_cli --config pool.yaml`` does the same.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from engine.llama_cpp_build import ensure_llama_server, llama_server_path
from engine.pool import EnginePool, PoolStartError
from engine.pool_config import PoolConfig, load_pool_config
from engine.registry import PublishedPool

DESCRIPTION = """\
Start the engines listed in a pool YAML file (EngineSpec fields per engine, see
docs/engines.md), warm each one up, publish the ready ones to a JSON file the gateway
watches, restart crashed or hung engines with exponential backoff, and stop them all
(whole process groups) on SIGINT or SIGTERM.
"""


def add_pool_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--config", type=Path, required=True, help="pool YAML file")
    add(
        "--publish",
        type=Path,
        default=None,
        help="write the live engine list here (overrides publish_path in the file)",
    )
    add(
        "--ready-timeout",
        type=float,
        default=None,
        help="give up (exit 1) if the engines are not ready after this many seconds",
    )
    add(
        "--print-commands",
        action="store_true",
        help="print each engine's command line and environment, start nothing",
    )
    add("--log-level", default="info", help="debug, info, warning (default: %(default)s)")


def run_pool(args: argparse.Namespace) -> int:
    config = load_pool_config(args.config)
    if args.publish is not None:
        config = config.model_copy(update={"publish_path": args.publish.expanduser().resolve()})
    if args.print_commands:
        print_commands(config)
        return 0
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if needs_llama_build(config):
        _say("building llama-server (once; minutes on 2 cores)")
        ensure_llama_server()
    return asyncio.run(serve_pool(config, args.ready_timeout))


def needs_llama_build(config: PoolConfig) -> bool:
    """A llama.cpp engine runs the cached build, and there is none yet."""
    wants = any(
        e.spec.get("kind") == "llama.cpp" and not e.spec.get("binary") for e in config.engines
    )
    return wants and llama_server_path() is None


def print_commands(config: PoolConfig) -> None:
    for engine_id, spec in config.engine_specs():
        print(f"# {engine_id}: {spec.url}")
        for key, value in sorted(spec.env().items()):
            print(f"{key}={value}")
        print(" ".join(spec.argv(config.python or sys.executable)))


async def serve_pool(config: PoolConfig, ready_timeout: float | None = None) -> int:
    """Run until SIGINT/SIGTERM; 0 after a signal, 1 if the pool could not start."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    pool = EnginePool(config, ready_timeout_s=ready_timeout)
    pool.subscribe(_report)
    entered = asyncio.create_task(pool.__aenter__())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({entered, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if not entered.done():  # signal during start-up: __aenter__ stops what it started
        entered.cancel()
        await asyncio.gather(entered, return_exceptions=True)
        await pool.stop()
        _say("stopped before the pool was ready")
        return 0
    try:
        entered.result()
    except PoolStartError as error:
        stopper.cancel()
        _say(f"failed to start: {error}")
        return 1
    _say(
        f"ready: {', '.join(pool.snapshot().ready_urls())}"
        + (f" (published to {config.publish_path})" if config.publish_path else "")
    )
    try:
        await stopper
    finally:
        await pool.__aexit__(None, None, None)
    _say("stopped")
    return 0


def _report(snapshot: PublishedPool) -> None:
    states = " ".join(f"{e.id}={e.state.value}" for e in snapshot.engines)
    _say(f"generation {snapshot.generation}: {states}")


def _say(message: str) -> None:
    print(f"[engine pool] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engine pool",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_pool_arguments(parser)
    return run_pool(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
