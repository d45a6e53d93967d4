"""Validating what the gateway sends against OpenAI's published schemas (vendored, see
vendor_openai_schemas.py).

The document is OpenAPI 3.1 (JSON Schema 2020-12) but still marks many fields
``nullable: true`` in the 3.0 way; such a schema also accepts ``null`` here. Nothing else is
relaxed: unknown (vendor) fields are allowed because OpenAI's schemas allow them.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

VENDORED = Path(__file__).with_name("openai_schemas.json")
BASE_URI = "urn:openai-openapi"


def _nullable(node: Any) -> Any:
    if isinstance(node, dict):
        node = {key: _nullable(value) for key, value in node.items()}
        if node.pop("nullable", False) is True:
            return {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    return node


@cache
def _document() -> dict[str, Any]:
    vendored = json.loads(VENDORED.read_text())
    return {"components": _nullable(vendored["components"])}


@cache
def validator(name: str) -> Draft202012Validator:
    document = _document()
    if name not in document["components"]["schemas"]:
        raise KeyError(f"{name} is not vendored: add it to ROOTS and vendor again")
    registry: Registry[Any] = Registry().with_resource(
        BASE_URI, Resource.from_contents(document, default_specification=DRAFT202012)
    )
    return Draft202012Validator(
        {"$ref": f"{BASE_URI}#/components/schemas/{name}"}, registry=registry
    )


def errors(name: str, instance: Any) -> list[str]:
    """Every way ``instance`` breaks schema ``name`` (empty when it conforms)."""
    found = []
    for error in validator(name).iter_errors(instance):
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        found.append(f"{name} at {where}: {error.message[:300]}")
    return found


@cache
def event_schemas() -> dict[str, str]:
    """Responses stream event type -> the name of its schema (ResponseStreamEvent's branches)."""
    schemas = _document()["components"]["schemas"]
    found: dict[str, str] = {}
    for branch in schemas["ResponseStreamEvent"]["anyOf"]:
        name = branch["$ref"].rsplit("/", 1)[-1]
        for event_type in schemas[name]["properties"]["type"].get("enum", []):
            found[event_type] = name
    return found


def check_event(event: Any) -> None:
    """One Responses stream event against the schema of its own type."""
    name = event_schemas().get(str(event.get("type"))) if isinstance(event, dict) else None
    assert name is not None, f"not a Responses stream event type: {event!r:.200}"
    check(name, event)


def check(name: str, instance: Any) -> None:
    """Raises AssertionError listing what does not conform."""
    problems = errors(name, instance)
    assert not problems, "\n".join(problems)


def completion_chunk(chunk: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's legacy completions stream reuses CreateCompletionResponse, whose finish_reason
    does not allow the null that OpenAI itself sends until the last chunk: only that is let
    through (as "stop"); everything else is checked as it is."""
    choices = [
        {**c, "finish_reason": c["finish_reason"] or "stop"} if isinstance(c, dict) else c
        for c in chunk.get("choices", [])
    ]
    return {**chunk, "choices": choices}
