"""Perplexity of a model folder (plain or compressed-tensors quantized) on held-out text.

    python load/perplexity.py MODEL_DIR [MODEL_DIR ...] [--texts FILE.jsonl]

The held-out texts are joined with newlines into one token stream and scored in
non-overlapping windows of ``--window`` tokens (the classic WikiText-style measure): the
perplexity is exp(mean negative log-likelihood) over every predicted token. Quantized
checkpoints are decompressed by transformers + compressed-tensors, so this measures the
weights' quality, not a kernel. Runs on CPU in float32.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

DEFAULT_TEXTS = Path(__file__).resolve().parents[1] / "engine" / "data" / "heldout_banking77.jsonl"


def perplexity(model_dir: Path, texts: list[str], window: int) -> tuple[float, int]:
    """(perplexity, number of scored tokens)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, local_files_only=True
    )
    model.eval()
    ids = tokenizer("\n".join(texts), return_tensors="pt", add_special_tokens=False).input_ids[0]
    total_nll, scored = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(ids) - 1, window):
            chunk = ids[start : start + window].unsqueeze(0)
            if chunk.shape[1] < 2:
                break
            logits = model(chunk).logits[0, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits, chunk[0, 1:], reduction="sum")
            total_nll += float(nll)
            scored += chunk.shape[1] - 1
    return math.exp(total_nll / scored), scored


def folder_mib(folder: Path) -> float:
    weights = [p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin")]
    return sum(p.stat().st_size for p in weights) / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--texts", type=Path, default=DEFAULT_TEXTS)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--out", type=Path, default=None, help="write results as JSON")
    args = parser.parse_args(argv)
    texts = [json.loads(line)["text"] for line in args.texts.read_text().splitlines() if line]
    results = []
    for model_dir in args.models:
        started = time.monotonic()
        ppl, tokens = perplexity(model_dir, texts, args.window)
        row = {
            "model": str(model_dir),
            "weights_mib": round(folder_mib(model_dir), 1),
            "perplexity": round(ppl, 3),
            "tokens": tokens,
            "seconds": round(time.monotonic() - started, 1),
        }
        results.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
