"""The engine kinds the pool can run, and the one type that covers them.

``vllm`` (engine/spec.py, the default) and ``llama.cpp`` (engine/llama_cpp_spec.py). Both specs
give EngineProcess and the pool the same surface: ``name``, ``url``, ``host``, ``port``,
``argv()`` and ``env()``.
"""

from __future__ import annotations

from typing import Literal, TypeAlias, get_args

from engine.llama_cpp_spec import LlamaServerSpec
from engine.spec import EngineSpec

Kind = Literal["vllm", "llama.cpp"]
KINDS: tuple[str, ...] = get_args(Kind)
ServerSpec: TypeAlias = EngineSpec | LlamaServerSpec


def kind_of(spec: ServerSpec) -> Kind:
    return "llama.cpp" if isinstance(spec, LlamaServerSpec) else "vllm"
