"""The prepared default model: conversion, the tokenizer fix, idempotence."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from engine.models import (
    DEFAULT_MODEL_NAME,
    MARKER,
    PREPARE_VERSION,
    is_prepared,
    model_dir,
    prepare_default_model,
)
from engine.tokenizer_fix import TokenizerCheckError, check_tokenizer, fix_tokenizer

TEXTS = [
    "Hello, world!",
    "  spaces  around  ",
    "first line\nsecond line\n\n\tthird, after a tab",
    "unicode: café, Ångström, 日本語, emoji 🎉 and — dashes",
    "punctuation: ;:!?()[]{}<>'\"`~@#$%^&*-_=+/\\|",
    "numbers 0 12 345 6789.01",
]

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json")


@pytest.fixture(scope="module")
def model_path() -> Path:
    return prepare_default_model()


@pytest.fixture(scope="module")
def tokenizer(model_path: Path) -> Any:
    return AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)


def test_folder_is_complete(model_path: Path) -> None:
    assert model_path.name == DEFAULT_MODEL_NAME and is_prepared(model_path)
    for name in ("config.json", "model.safetensors", *TOKENIZER_FILES):
        assert (model_path / name).is_file(), name
    assert (model_path / "model.safetensors").stat().st_size > 200_000_000  # bf16 weights
    config = json.loads((model_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    decoder = json.loads((model_path / "tokenizer.json").read_text())["decoder"]
    assert decoder["type"] == "ByteLevel"


@pytest.mark.parametrize("text", TEXTS)
def test_decode_encode_round_trip(tokenizer: Any, text: str) -> None:
    assert tokenizer.decode(tokenizer.encode(text)) == text


@pytest.mark.parametrize("text", [t for t in TEXTS if t.isascii()])
def test_token_by_token_decoding_joins_to_the_text(tokenizer: Any, text: str) -> None:
    """What a stream does (ASCII only: one token may hold part of a UTF-8 character)."""
    ids = tokenizer.encode(text)
    assert len(ids) > 1
    assert "".join(tokenizer.decode([i]) for i in ids) == text


def test_special_tokens(tokenizer: Any) -> None:
    assert tokenizer.bos_token is None
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.encode("hi")[0] != tokenizer.convert_tokens_to_ids("<|im_start|>")
    generation = json.loads((Path(tokenizer.name_or_path) / "generation_config.json").read_text())
    assert generation["eos_token_id"] == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_chat_template_renders_chatml(tokenizer: Any) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
    ]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    default_system = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert default_system.startswith("<|im_start|>system\n") and "hi<|im_end|>" in default_system


def test_second_prepare_returns_at_once(model_path: Path) -> None:
    started = time.monotonic()
    assert prepare_default_model() == model_path
    assert time.monotonic() - started < 0.5


def test_marker_decides_what_is_prepared(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    assert not is_prepared(folder)
    (folder / MARKER).write_text("{not json")
    assert not is_prepared(folder)
    (folder / MARKER).write_text(json.dumps({"version": PREPARE_VERSION - 1}))
    assert not is_prepared(folder)
    (folder / MARKER).write_text(json.dumps({"version": PREPARE_VERSION}))
    assert is_prepared(folder)


def test_check_catches_a_broken_tokenizer_and_fix_repairs_it(
    model_path: Path, tmp_path: Path
) -> None:
    """Fault injection: the tokenizer as a careless GGUF conversion leaves it."""
    for name in TOKENIZER_FILES:
        shutil.copy(model_path / name, tmp_path / name)
    tok = json.loads((tmp_path / "tokenizer.json").read_text())
    tok["decoder"] = None  # no ByteLevel decoding: output shows 'Ġ' and 'Ċ'
    (tmp_path / "tokenizer.json").write_text(json.dumps(tok))
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config |= {"bos_token": "<|im_start|>", "eos_token": "<|endoftext|>"}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))

    with pytest.raises(TokenizerCheckError) as caught:
        check_tokenizer(tmp_path)
    message = str(caught.value)
    assert "bos_token" in message and "eos_token" in message and "round trip" in message

    fix_tokenizer(tmp_path, model_max_length=8192)
    check_tokenizer(tmp_path)  # raises if anything is still wrong


def test_prepare_into_a_fresh_dir_cleans_leftovers(tmp_path: Path) -> None:
    """A crashed earlier run (temp folder, half-written target) does not confuse prepare."""
    target = model_dir(tmp_path)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # half-written, no marker
    stale = target.parent / f".{DEFAULT_MODEL_NAME}.tmp-crashed"
    stale.mkdir()
    assert prepare_default_model(tmp_path) == target
    assert is_prepared(target) and not stale.exists()
    assert [p.name for p in target.parent.iterdir() if ".tmp-" in p.name] == []
    check_tokenizer(target)
    assert json.loads((target / "config.json").read_text())["model_type"] == "llama"
