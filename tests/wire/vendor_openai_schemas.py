"""Vendors the parts of OpenAI's OpenAPI document that the wire-format tests check against.

    python -m tests.wire.vendor_openai_schemas PATH/TO/openapi.yaml [COMMIT]

writes tests/wire/openai_schemas.json: the component schemas named in ROOTS and every schema
they reference, unchanged, with where they came from. The tests read only that file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

SOURCE = "https://github.com/openai/openai-openapi (openapi.yaml)"
COMMIT = "f85dbe223d40e1a31cba812ab2d755c7e98a92a3"  # 2026-08-21
ROOTS = (
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse",
    "ListModelsResponse",
    "ErrorResponse",
    "Response",
    "ResponseStreamEvent",
    "ResponseItemList",
)
OUT = Path(__file__).with_name("openai_schemas.json")
PREFIX = "#/components/schemas/"


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(PREFIX):
            found.add(ref.removeprefix(PREFIX))
        for value in node.values():
            found |= _refs(value)
    elif isinstance(node, list):
        for item in node:
            found |= _refs(item)
    return found


def closure(schemas: dict[str, Any], roots: tuple[str, ...]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in kept:
            continue
        kept[name] = schemas[name]
        todo.extend(_refs(schemas[name]) - kept.keys())
    return dict(sorted(kept.items()))


def main(argv: list[str]) -> None:
    document = yaml.safe_load(Path(argv[0]).read_text())
    schemas = closure(document["components"]["schemas"], ROOTS)
    vendored = {
        "source": SOURCE,
        "commit": argv[1] if len(argv) > 1 else COMMIT,
        "openapi_version": document["info"]["version"],
        "roots": list(ROOTS),
        "licence": "MIT (OpenAI); see the source repository's LICENSE",
        "components": {"schemas": schemas},
    }
    OUT.write_text(json.dumps(vendored, indent=1, sort_keys=False) + "\n")
    print(f"{OUT}: {len(schemas)} schemas, {OUT.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main(sys.argv[1:])
