"""Schemathesis against the gateway's own OpenAPI schema: no 500 for any input, and every
answer conforms to the schema (documented status codes, the OpenAI error shape).

The gateway runs in front of a stub engine that answers anything (tests/fuzz/any_engine.py) with the
real cache (in-process store, real embedder), so fuzzed bodies that pass validation go through
cache policy, lookup, routing, relay and insert. Schemathesis makes schema-conformant bodies
(positive) and bodies that break the schema on purpose (negative). A body whose ``model`` is a
non-empty string gets the stub's model name in half of the cases, or almost every case would
stop at the model check (404); that keeps a negative case negative, since the field was valid.

Not checked: positive_data_acceptance ("valid by the schema -> 2xx"), which the gateway does
not promise: a schema-valid body may name an unknown model (404) or break a configured limit
(400). The run is bounded by hypothesis' max_examples (FUZZ_EXAMPLES, default 60 per route).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from gateway.config import BackendConfig
from tests.fuzz.any_engine import MODEL, running_any_engine
from tests.support.gateway import running_gateway

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
LIMITS = {"max_body_bytes": 64 * 1024, "max_messages": 8, "max_prompt_chars": 2000}


@pytest.fixture(scope="module")
def api_schema() -> Iterator[Any]:
    with (
        running_any_engine() as engine,
        running_gateway(
            backends=[BackendConfig(url=engine.url)],
            limits=LIMITS,
            cache={"store_timeout_s": 5.0},
            routing={"budget": {"max_tokens": 64}},
        ) as url,
    ):
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")


def _aim_at_the_stub(case: Any) -> None:
    body = case.body
    named = isinstance(body, dict) and isinstance(body.get("model"), str) and body["model"]
    if named and zlib.crc32(repr(sorted(body, key=str)).encode()) % 2:
        body["model"] = MODEL


def _operations(api_schema: Any) -> list[Any]:
    found = [result.ok() for result in api_schema.get_all_operations()]
    return [op for op in found if op.path.startswith("/v1/")]


def test_the_schema_documents_the_request_bodies(api_schema: Any) -> None:
    posts = {op.path: op for op in _operations(api_schema) if op.method.upper() == "POST"}
    assert set(posts) == {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/responses",
        "/v1/messages",
    }
    for op in posts.values():
        assert op.body, f"{op.path}: no request body in the OpenAPI schema"


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_input_gets_a_500_or_an_undocumented_answer(
    api_schema: Any, mode: GenerationMode
) -> None:
    operations = _operations(api_schema)
    assert len(operations) == 8  # 4 POSTs, GET /v1/models, the stored responses' GET/DELETE
    if mode == GenerationMode.NEGATIVE:  # the GETs and DELETE take no body to break
        operations = [op for op in operations if op.method.upper() == "POST"]
    seen: dict[int, int] = {}
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def call(case: Any) -> None:
            _aim_at_the_stub(case)
            response = case.call_and_validate(
                excluded_checks=[positive_data_acceptance], timeout=30
            )
            assert response.status_code < 500, response.text
            seen[response.status_code] = seen.get(response.status_code, 0) + 1

        call()
    print(f"\n{mode}: status counts {dict(sorted(seen.items()))}")
    # The run reached past validation: some bodies were answered by the stub engine.
    assert seen.get(200, 0) > 0 if mode == GenerationMode.POSITIVE else seen.get(400, 0) > 0, seen
