"""``python -m gateway``: the gateway's commands."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from gateway.config import CONFIG_FILE_ENV, Settings


def _serve(args: argparse.Namespace) -> int:
    from gateway.server import uvicorn_server

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    uvicorn_server(Settings(**overrides)).run()
    return 0


def _up(args: argparse.Namespace) -> int:
    from gateway.launcher import run_stack

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    return run_stack(Settings(**overrides), data_dir=args.data_dir)


def _warm(args: argparse.Namespace) -> int:
    from engine.models import default_data_dir
    from gateway.admin_key import key_file, read_local_key
    from gateway.warm import warm_file

    data = default_data_dir()
    admin_key = args.admin_key or read_local_key(data)
    if not admin_key:
        raise SystemExit(
            f"the admin key is needed: --admin-key, GATEWAY_ADMIN_KEY, or {key_file(data)} "
            "(written by `python -m gateway up`)"
        )
    stored = warm_file(
        Path(args.file),
        url=args.url,
        admin_key=admin_key,
        model=args.model,
        tenant=args.tenant,
        namespace=args.namespace,
    )
    print(f"stored {stored} entries")
    return 0


def _eval(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from gateway.cache.evaluate import describe, evaluate, read_labelled

    overrides: dict[str, object] = {
        k: v for k, v in (("policy", args.policy), ("threshold", args.threshold)) if v
    }
    if args.no_guard:
        overrides["guard"] = False
    if args.max_false_hit_rate is not None:
        overrides["max_false_hit_rate"] = args.max_false_hit_rate or None
    config = Settings().cache.model_copy(update=overrides)
    seed, queries = read_labelled(Path(args.seed)), read_labelled(Path(args.queries))
    result = asyncio.run(
        evaluate(
            seed,
            queries,
            config,
            progress=True,
            insert_misses=args.insert_misses,
            redis_url=args.redis_url,
        )
    )
    summary = result.summary()
    print("\n".join(describe(summary)))
    if args.json:
        print(json.dumps(summary), flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway",
        description="OpenAI-compatible semantic-caching gateway in front of vLLM engines. "
        "Settings come from GATEWAY_* environment variables and an optional YAML file.",
    )
    parser.add_argument(
        "--config", metavar="FILE", help=f"YAML settings file (same as {CONFIG_FILE_ENV}=FILE)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="serve the gateway in front of the engines named in the settings"
    )
    up = commands.add_parser(
        "up",
        help="prepare the default model, start one local vLLM engine and serve the gateway "
        "in front of it until Ctrl-C or SIGTERM (what `make run` does)",
    )
    up.add_argument("--data-dir", help="where models and engine logs live (ENGINE_DATA_DIR)")
    for command in (serve, up):
        command.add_argument("--host", help="listen address (GATEWAY_HOST, default 127.0.0.1)")
        command.add_argument("--port", type=int, help="listen port (GATEWAY_PORT, default 8080)")
    cache = commands.add_parser("cache", help="manage the semantic cache").add_subparsers(
        dest="cache_command", required=True, metavar="CACHE_COMMAND"
    )
    warm = cache.add_parser(
        "warm",
        help='store known answers from a JSONL file ({"messages": [...], "answer": ...} '
        "per line) through a running gateway's admin API",
    )
    warm.add_argument("file", help="JSONL file")
    warm.add_argument("--model", required=True, help="model the answers are for")
    warm.add_argument(
        "--url",
        default=f"http://127.0.0.1:{os.environ.get('GATEWAY_PORT') or 8080}",
        help="the gateway's base URL (default: 127.0.0.1 on GATEWAY_PORT, else 8080)",
    )
    warm.add_argument(
        "--admin-key",
        help="default: GATEWAY_ADMIN_KEY, else the key `gateway up` keeps in its data dir "
        "($ENGINE_DATA_DIR or ~/.cache/semcache-gateway)/admin-key",
    )
    warm.add_argument("--tenant", default="default", help="tenant the answers belong to")
    warm.add_argument("--namespace", default="default", help="cache namespace")
    warm.set_defaults(run=_warm)
    evaluate = cache.add_parser(
        "eval",
        help="seed a fresh cache (in process, or --redis-url) with one labelled CSV "
        "(text,category; a seed's answer is its category), look up every text of another "
        "through the gateway's lookup path, print hit rate, false-hit rate and latency",
    )
    evaluate.add_argument("--seed", required=True, metavar="SEED.csv", help="what is cached")
    evaluate.add_argument("--queries", required=True, metavar="QUERIES.csv", help="what is asked")
    evaluate.add_argument(
        "--json", action="store_true", help='last line: {"hit_rate": x, "false_hit_rate": y, ...}'
    )
    evaluate.add_argument(
        "--policy", choices=("threshold", "consensus"), help="hit policy (cache.policy)"
    )
    evaluate.add_argument("--threshold", type=float, help="cosine threshold (cache.threshold)")
    evaluate.add_argument(
        "--max-false-hit-rate",
        type=float,
        metavar="RATE",
        help="calibrate the semantic tier on the seeds for this false-hit rate, as after a "
        "warm-up (cache.max_false_hit_rate; 0 = off)",
    )
    evaluate.add_argument(
        "--no-guard",
        action="store_true",
        help="turn the polarity and slot guard off (cache.guard), to see what it refuses",
    )
    evaluate.add_argument(
        "--insert-misses",
        action="store_true",
        help="store each miss with an answer of its own, as the gateway stores an engine's "
        "answer (a cache that mixes seeded and generated answers)",
    )
    evaluate.add_argument(
        "--redis-url",
        metavar="URL",
        help="seed a Redis 8 (redis:// or redis+cluster://) instead of the in-process store, "
        "under a key prefix of its own flushed after: the Redis store's search on the same data",
    )
    evaluate.set_defaults(run=_eval)
    serve.set_defaults(run=_serve)
    up.set_defaults(run=_up)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.config:
        os.environ[CONFIG_FILE_ENV] = args.config
    code: int = args.run(args)
    return code
