"""An int8 embedder, measured before it is offered: speed and cache quality, side by side.

    python -m load.bench_int8 [--json out.json]

The default encoder's ONNX export (float32) is quantized with onnxruntime's dynamic
quantization (weights to int8, activations quantized at run time), once per scheme:
``per-tensor`` (every op it supports, one scale per tensor) and ``per-channel-matmul`` (MatMul
weights only, one scale per output channel). Each encoder then gets, in one run:

- speed: one text per model call and batches of 8 (the embedder's batch size), Banking77 texts;
- agreement with float32: cosine of the same text's two vectors;
- quality: ``cache eval`` on this project's own Banking77 splits (seed -> tune and report),
  default configuration, every query one lookup: hits and false hits.

The gateway keeps float32 unless these numbers say otherwise (docs/benchmarks.md section 1).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.cache import CacheConfig, Embedder
from gateway.cache.encoders import (
    OnnxEncoder,
    default_model_path,
    ensure_onnx_export,
    vector_rows,
)
from gateway.cache.evaluate import evaluate
from load.banking77 import DEFAULT_CSV, read_labelled, split
from load.report import emit
from load.stats import loadavg, summary_ms

CACHE_DIR = Path.home() / ".cache" / "semcache-gateway" / "onnx"
SCHEMES: dict[str, dict[str, Any]] = {
    "per-tensor": {"per_channel": False},
    "per-channel-matmul": {"per_channel": True, "op_types_to_quantize": ["MatMul"]},
}


def quantized(model_path: Path, scheme: str, out_dir: Path) -> OnnxEncoder:
    """An OnnxEncoder over an int8 copy of the model's float32 export."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = ensure_onnx_export(model_path, CACHE_DIR)
    target = out_dir / f"{scheme}.onnx"
    quantize_dynamic(source, target, weight_type=QuantType.QInt8, **SCHEMES[scheme])
    return OnnxEncoder(model_path, cache_dir=CACHE_DIR, onnx_path=target)


def speed(encoder: OnnxEncoder, texts: Sequence[str]) -> dict[str, Any]:
    encoder.encode(list(texts[:8]))  # not timed: first call
    single, batch = [], []
    for text in texts:
        started = time.perf_counter()
        encoder.encode([text])
        single.append(time.perf_counter() - started)
    for i in range(0, len(texts), 8):
        started = time.perf_counter()
        encoder.encode(list(texts[i : i + 8]))
        batch.append(time.perf_counter() - started)
    return {"one_text": summary_ms(single), "batch_of_8": summary_ms(batch)}


async def quality(encoder: OnnxEncoder, seed: Any, queries: Any) -> dict[str, Any]:
    async with Embedder(encoder=encoder) as embedder:
        result = await evaluate(seed, queries, CacheConfig(), embedder=embedder)
    summary = result.summary()
    keys = ("queries", "hits", "false_hits", "hit_rate", "false_hit_rate", "guard_refusals")
    return {key: summary[key] for key in keys}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    parts = split(read_labelled(args.csv))
    texts = [row.text for row in parts.tune[: args.n]]
    model_path = default_model_path()
    report: dict[str, Any] = {"loadavg_start": loadavg(), "texts_timed": len(texts)}
    with tempfile.TemporaryDirectory() as tmp:
        encoders = {"float32": OnnxEncoder(model_path, cache_dir=CACHE_DIR)}
        for scheme in SCHEMES:
            encoders[f"int8 {scheme}"] = quantized(model_path, scheme, Path(tmp))
        reference = vector_rows(encoders["float32"], texts)
        for name, encoder in encoders.items():
            cosine = (vector_rows(encoder, texts) * reference).sum(axis=1)
            report[name] = {
                **speed(encoder, texts),
                "cosine_to_float32": {"min": float(cosine.min()), "mean": float(cosine.mean())},
                "tune": await quality(encoder, parts.seed, parts.tune),
                "report": await quality(encoder, parts.seed, parts.report),
            }
            print(f"[bench_int8] {name} done", flush=True)
    report["loadavg_end"] = loadavg()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m load.bench_int8", description=__doc__)
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--n", type=int, default=400, help="tune-split texts timed per encoder")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    emit(asyncio.run(run(args)), args.json)


if __name__ == "__main__":
    main()
