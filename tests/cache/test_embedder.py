"""The embedder: ONNX == torch, micro-batching, truncation flag, errors reach every waiter."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from gateway.cache import Embedder, EmbedderConfig
from gateway.cache.encoders import (
    Embedding,
    OnnxEncoder,
    TorchEncoder,
    default_model_path,
    ensure_onnx_export,
    vector_rows,
)
from load.bench_int8 import CACHE_DIR, quantized

TEXTS = [
    "How do I reset my password?",
    "How can I reset my password?",
    "How do I change my email?",
    "a",
    "Ünïcödé and emoji 🙂 text",
    "The quick brown fox jumps over the lazy dog. " * 60,  # past the 256-token window
    "   leading and trailing spaces   ",
]


@pytest.fixture(scope="module")
def torch_encoder() -> TorchEncoder:
    return TorchEncoder(default_model_path())


async def test_onnx_vectors_equal_torch_vectors(
    embedder: Embedder, torch_encoder: TorchEncoder
) -> None:
    assert embedder.backend == "onnx"
    onnx = await embedder.embed_many(TEXTS)
    torch = torch_encoder.encode(TEXTS)
    for text, got, want in zip(TEXTS, onnx, torch, strict=True):
        assert float(got.vector @ want.vector) > 0.999, text
        assert got.truncated == want.truncated


def test_an_onnx_file_of_the_model_can_be_given_such_as_an_int8_copy(tmp_path: Path) -> None:
    model = default_model_path()
    exported = OnnxEncoder(model, cache_dir=CACHE_DIR)
    int8 = quantized(model, "per-channel-matmul", tmp_path)
    assert exported.onnx_path == ensure_onnx_export(model, CACHE_DIR)
    assert int8.onnx_path == tmp_path / "per-channel-matmul.onnx"
    assert int8.onnx_path.stat().st_size < 0.75 * exported.onnx_path.stat().st_size
    for got, want in zip(int8.encode(TEXTS), exported.encode(TEXTS), strict=True):
        cosine = float(got.vector @ want.vector)
        assert 0.97 < cosine < 0.99999  # close, yet not the float32 model's vector
        assert got.truncated == want.truncated


def test_vector_rows_are_each_texts_own_vector_in_order() -> None:
    encoder = OnnxEncoder(default_model_path(), cache_dir=CACHE_DIR)
    rows = vector_rows(encoder, TEXTS, chunk=3)  # 7 texts: calls of 3, 3 and 1
    assert rows.shape == (len(TEXTS), 384)
    for row, text in zip(rows, TEXTS, strict=True):
        assert float(row @ encoder.encode([text])[0].vector) > 0.9999, text


async def test_vectors_are_unit_float32_and_read_only(embedder: Embedder) -> None:
    vector = await embedder.embed("How do I reset my password?")
    assert vector.dtype == np.float32
    assert vector.shape == (embedder.dim,) == (384,)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
    with pytest.raises(ValueError):
        vector[0] = 1.0


async def test_truncation_is_reported(embedder: Embedder) -> None:
    short, long = await embedder.embed_many(["short question?", "word " * 300])
    assert not short.truncated
    assert long.truncated


async def test_concurrent_calls_are_batched_and_get_their_own_vectors() -> None:
    texts = [f"Question number {i} about my card and account" for i in range(48)]
    async with Embedder(EmbedderConfig(batch_size=16, lru_size=0)) as fresh:
        expected = fresh.encode_blocking(texts)
        results = await asyncio.gather(*(fresh.embed(text) for text in texts))
        stats = fresh.stats.as_dict()
    for got, want in zip(results, expected, strict=True):
        assert float(got @ want.vector) > 0.9999
    assert stats["texts_embedded"] == 48
    assert stats["model_calls"] < 48  # batched
    assert stats["largest_batch"] <= 16


async def test_identical_texts_in_flight_share_one_computation() -> None:
    async with Embedder(EmbedderConfig(lru_size=0)) as fresh:
        vectors = await asyncio.gather(*(fresh.embed("same text") for _ in range(20)))
        assert fresh.stats.texts_embedded == 1
    assert all(v is vectors[0] for v in vectors)


async def test_memo_serves_a_recent_text_without_the_model(embedder: Embedder) -> None:
    await embedder.embed("memo check text")
    calls = embedder.stats.model_calls
    await embedder.embed("memo check text")
    assert embedder.stats.model_calls == calls


async def test_max_wait_collects_a_batch() -> None:
    async with Embedder(EmbedderConfig(max_wait_ms=30, lru_size=0)) as fresh:

        async def later(i: int) -> np.ndarray:
            await asyncio.sleep(0.002 * i)
            return await fresh.embed(f"staggered text {i}")

        await asyncio.gather(*(later(i) for i in range(5)))
        assert fresh.stats.model_calls == 1


class _FailingEncoder:
    """Fault injection: the model call raises, from the worker thread."""

    name = "failing"
    dim = 3

    def __init__(self) -> None:
        self.threads: set[str] = set()

    def encode(self, texts: list[str]) -> list[Embedding]:
        self.threads.add(threading.current_thread().name)
        raise RuntimeError("model exploded")


async def test_a_model_error_reaches_every_waiter_and_the_batcher_survives() -> None:
    encoder = _FailingEncoder()
    async with Embedder(EmbedderConfig(), encoder=encoder) as broken:
        results = await asyncio.gather(
            *(broken.embed(f"t{i}") for i in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, RuntimeError) and "exploded" in str(r) for r in results)
        with pytest.raises(RuntimeError, match="exploded"):
            await broken.embed("again")  # still serving
    assert encoder.threads and all(name.startswith("embedder") for name in encoder.threads)


async def test_embed_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        await Embedder(EmbedderConfig(), encoder=_FailingEncoder()).embed("x")
