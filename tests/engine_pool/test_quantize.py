"""The quantize command's own logic (the 10-minute llm-compressor run itself is measured and
reported in docs/engines.md, not repeated in CI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.quantize import (
    DEFAULT_CALIBRATION,
    load_calibration,
    main,
    pick_group_size,
    render,
)


def test_group_size_falls_back_when_a_width_is_not_a_multiple() -> None:
    smollm2 = {"q_proj": 576, "o_proj": 576, "down_proj": 1536}
    assert pick_group_size(smollm2, 128, strict=False) == 64
    assert pick_group_size({"a": 4096, "b": 14336}, 128, strict=False) == 128
    with pytest.raises(ValueError, match="does not divide"):
        pick_group_size(smollm2, 128, strict=True)
    with pytest.raises(ValueError, match="no group size"):
        pick_group_size({"odd": 100}, 128, strict=False)


def test_calibration_formats(tmp_path: Path) -> None:
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text(
        "\n".join(
            [
                json.dumps({"text": "plain text"}),
                json.dumps({"prompt": "a prompt"}),
                json.dumps(
                    {
                        "messages": [
                            {"role": "user", "content": "hi"},
                            {"role": "assistant", "content": "hello"},
                        ]
                    }
                ),
                "",
            ]
        )
    )
    records = load_calibration(jsonl, limit=10)
    assert records[:2] == ["plain text", "a prompt"] and isinstance(records[2], list)
    csv = tmp_path / "c.csv"
    csv.write_text("text,category\nwhere is my card,card_arrival\nreset pin,change_pin\n")
    assert load_calibration(csv, limit=10) == ["where is my card", "reset pin"]
    sample = load_calibration(DEFAULT_CALIBRATION, limit=16, seed=1)
    assert len(sample) == 16 and sample == load_calibration(DEFAULT_CALIBRATION, 16, seed=1)
    (tmp_path / "bad.jsonl").write_text('{"label": 1}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        load_calibration(tmp_path / "bad.jsonl", limit=10)


def test_bundled_samples_are_disjoint() -> None:
    heldout = DEFAULT_CALIBRATION.with_name("heldout_banking77.jsonl")
    calibration = {
        json.loads(line)["text"] for line in DEFAULT_CALIBRATION.read_text().splitlines()
    }
    held = {json.loads(line)["text"] for line in heldout.read_text().splitlines()}
    assert len(calibration) == 256 and len(held) == 200 and not calibration & held


def test_prompts_are_rendered_as_chat_turns() -> None:
    from transformers import AutoTokenizer

    from engine.models import prepare_default_model

    tokenizer = AutoTokenizer.from_pretrained(str(prepare_default_model()), local_files_only=True)
    chat = render(["where is my card"], tokenizer, chat=True)[0]
    assert "<|im_start|>user\nwhere is my card<|im_end|>" in chat  # after the default system turn
    assert chat.endswith("<|im_start|>assistant\n")
    assert render(["where is my card"], tokenizer, chat=False) == ["where is my card"]


def test_without_llmcompressor_or_its_venv_it_says_how_to_set_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    if importlib.util.find_spec("llmcompressor") is not None:
        pytest.skip("llmcompressor is importable here")
    monkeypatch.setenv("ENGINE_QUANTIZE_VENV", str(tmp_path / "no-venv"))
    code = main(["--model", str(tmp_path), "--output", str(tmp_path / "out")])
    assert code == 2
    assert "python -m engine quantize --setup-env" in capsys.readouterr().err
