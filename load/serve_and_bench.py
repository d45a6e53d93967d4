"""Start one engine per model folder (EngineSpec defaults for the device), benchmark it with
load/bench_engine.py, print one sample answer, stop it; one model after the other.

    M=~/.cache/semcache-gateway/models
    python load/serve_and_bench.py $M/smollm2-135m-instruct-awq-w4a16 $M/smollm2-135m-instruct \
        --concurrency 1,4 --max-tokens 64 --out-dir load/results

Writes OUT_DIR/bench-<folder name>.json per model.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.ports import free_port  # noqa: E402
from engine.process import EngineProcess, EngineStartError  # noqa: E402
from engine.spec import EngineSpec  # noqa: E402

SERVED = "bench-model"


def run_one(model: Path, args: argparse.Namespace) -> int:
    spec = EngineSpec.for_device(
        args.device, model=str(model), served_model_name=SERVED, port=free_port()
    )
    engine = EngineProcess(spec, args.out_dir / f"engine-{model.name}.log", startup_timeout=900)
    started = time.monotonic()
    try:
        engine.start_sync()
    except EngineStartError as error:
        print(f"{model.name}: failed to start: {error}", flush=True)
        return 1
    print(f"{model.name}: ready in {time.monotonic() - started:.0f} s", flush=True)
    try:
        bench = [
            sys.executable,
            str(ROOT / "load" / "bench_engine.py"),
            "--url",
            spec.url,
            "--model",
            SERVED,
            "--concurrency",
            args.concurrency,
            "--requests-per-stream",
            str(args.requests_per_stream),
            "--max-tokens",
            str(args.max_tokens),
            "--warmup",
            "1",
            "--label",
            f"{args.device} {model.name}",
            "--out",
            str(args.out_dir / f"bench-{model.name}.json"),
        ]
        code = subprocess.run(bench).returncode
        answer = httpx.post(
            f"{spec.url}/v1/chat/completions",
            timeout=300,
            trust_env=False,
            json={
                "model": SERVED,
                "max_tokens": 40,
                "temperature": 0,
                "messages": [{"role": "user", "content": "How do I reset my card PIN?"}],
            },
        ).json()["choices"][0]["message"]["content"]
        print(f"{model.name} answer: {answer!r}", flush=True)
        return code
    finally:
        engine.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--concurrency", default="1,4")
    parser.add_argument("--requests-per-stream", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "load" / "results")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    return max(run_one(model.expanduser(), args) for model in args.models)


if __name__ == "__main__":
    sys.exit(main())
