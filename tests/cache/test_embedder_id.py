"""An index is only ever searched with the embedder that built it: another model (a fine-tune of
the default one, here the default with one weight matrix changed) gets scopes of its own on the
same Redis, and the default model keeps the scopes it always had."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from gateway.cache import CacheConfig, CacheControl, Embedder, EmbedderConfig, build_cache
from gateway.cache.encoders import default_model_path, model_fingerprint
from gateway.cache.policy import cache_query
from tests.cache.helpers import answer, chat, q_chat

QUESTION = "How do I reset my password?"
PARAPHRASE = "How can I reset my password?"


@pytest.fixture(scope="module")
def tuned_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model folder with its last layer's output projection nudged: what a
    fine-tune leaves behind (same files, other weights)."""
    import torch
    from safetensors.torch import load_file, save_file

    folder = tmp_path_factory.mktemp("tuned") / "model"
    shutil.copytree(default_model_path(), folder)
    weights = folder / "model.safetensors"
    tensors = load_file(str(weights))
    name = next(n for n in tensors if n.endswith("layer.5.output.dense.weight"))
    generator = torch.Generator().manual_seed(0)
    tensors[name] = tensors[name] + 0.05 * torch.randn(tensors[name].shape, generator=generator)
    save_file(tensors, str(weights), metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="module")
async def tuned_embedder(tuned_model: Path) -> AsyncIterator[Embedder]:
    async with Embedder(EmbedderConfig(backend="torch", model_path=tuned_model)) as tuned:
        yield tuned


def test_the_same_files_give_the_same_id_and_other_weights_another(
    tuned_model: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(default_model_path(), copy)
    assert model_fingerprint(copy) == model_fingerprint(default_model_path())
    assert model_fingerprint(tuned_model) != model_fingerprint(default_model_path())


def test_the_default_model_keeps_its_scopes() -> None:
    body = chat(QUESTION)
    plain = cache_query("chat", body, "acme", CacheControl())
    tagged = cache_query("chat", body, "acme", CacheControl(), embedder="abc")
    assert plain is not None and tagged is not None
    assert cache_query("chat", body, "acme", CacheControl(), embedder="") == plain
    assert tagged.scope != plain.scope and tagged.exact_key != plain.exact_key


async def test_another_embedder_never_reads_the_entries_of_the_default_one(
    embedder: Embedder, tuned_embedder: Embedder, redis_server: str
) -> None:
    assert embedder.model_id == "" and len(tuned_embedder.model_id) == 16
    first = await embedder.embed(QUESTION)
    other = await tuned_embedder.embed(QUESTION)
    assert float(first @ other) < 0.999  # the two models really place the text differently

    config = CacheConfig(redis_url=redis_server, key_prefix=f"t{uuid.uuid4().hex[:12]}")
    default = build_cache(config, embedder=embedder)
    tuned = build_cache(config, embedder=tuned_embedder)
    await default.start()
    await tuned.start()
    try:
        await default.insert(q_chat(default, QUESTION), answer("Use the reset link."))
        assert (await default.lookup(q_chat(default, PARAPHRASE))).status == "hit-semantic"

        assert q_chat(tuned, QUESTION).scope != q_chat(default, QUESTION).scope
        assert (await tuned.lookup(q_chat(tuned, QUESTION))).status == "miss"
        assert (await tuned.lookup(q_chat(tuned, PARAPHRASE))).status == "miss"

        await tuned.insert(q_chat(tuned, QUESTION), answer("Tuned: use the reset link."))
        mine = await tuned.lookup(q_chat(tuned, QUESTION))
        theirs = await default.lookup(q_chat(default, QUESTION))
        assert mine.answer is not None and mine.answer.text.startswith("Tuned")
        assert theirs.answer is not None and theirs.answer.text == "Use the reset link."
        assert np.isfinite(mine.similarity or 1.0)
    finally:
        await default.flush()
        await default.close()
        await tuned.close()
