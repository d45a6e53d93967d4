"""Property-based tests (hypothesis) of everything that reads a client's request before an
engine does: body parsing, schema validation and limits, Cache-Control, the cache's keys.

Properties: no exception but the documented ones for any input (InvalidRequest and
PayloadTooLarge from the API layer, InvalidCacheControl from parse_cache_control, none at all
from cache_query); cache keys that do not depend on the order of JSON object members or on
whitespace around the question, and that differ whenever the tenant, model, namespace, system
prompt or history differ.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from gateway.api.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    enforce_limits,
    read_json,
    validate_model,
)
from gateway.cache.control import CacheControl, InvalidCacheControl, parse_cache_control
from gateway.cache.policy import CacheQuery, cache_query
from gateway.config import LimitConfig
from gateway.errors import InvalidRequest, PayloadTooLarge

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DIGEST = re.compile(r"^[0-9a-f]{40}$")

# -- strategies --------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function"]) | st.text(
    max_size=8
)
parts = st.lists(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]), "text": st.text()})
    | st.dictionaries(st.text(max_size=6), json_values, max_size=3),
    max_size=3,
)
contents = st.text() | parts | st.none() | json_values
messages = st.lists(
    st.fixed_dictionaries({"role": roles, "content": contents}, optional={"name": st.text()})
    | json_values,
    max_size=5,
)
cache_extensions = (
    st.fixed_dictionaries(
        {},
        optional={
            "namespace": st.text(max_size=70) | json_values,
            "threshold": st.floats(allow_nan=False) | json_values,
            "ttl": st.floats(allow_nan=False) | json_values,
            "max_age": st.floats(allow_nan=False) | json_values,
        },
    )
    | json_values
)
known_fields = {
    "model": st.text(max_size=20) | json_values,
    "messages": messages | json_values,
    "prompt": st.text() | st.lists(st.text(), max_size=3) | st.lists(st.integers(), max_size=3),
    "stream": st.booleans() | json_values,
    "n": st.integers(-2, 200) | json_values,
    "max_tokens": st.integers(-2, 10**6) | json_values,
    "max_completion_tokens": st.integers(-2, 10**6) | json_values,
    "temperature": st.floats(allow_nan=False) | json_values,
    "top_p": st.floats(allow_nan=False) | json_values,
    "stop": st.text() | st.lists(st.text(), max_size=3) | json_values,
    "logprobs": json_values,
    "tools": json_values,
    "cache": cache_extensions,
    "stream_options": json_values,
}
bodies = st.fixed_dictionaries({}, optional=known_fields).flatmap(
    lambda body: st.dictionaries(st.text(max_size=12), json_values, max_size=3).map(
        lambda extra: {**extra, **body}
    )
)
headers = st.text(max_size=60) | st.lists(
    st.sampled_from(
        ["no-cache", "no-store", "only-if-cached", "max-age=0", "max-age=60", 'max-age="5"']
    )
    | st.text(alphabet='abcdefghijklmnopqrstuvwxyz-=0123456789", ', max_size=15),
    max_size=4,
).map(", ".join)
limits = st.builds(
    LimitConfig,
    max_messages=st.integers(1, 6),
    max_prompt_chars=st.integers(1, 200),
    max_tokens=st.integers(1, 1000),
)


def _reordered(value: Any) -> Any:
    """The same JSON with every object's members in reverse order."""
    if isinstance(value, dict):
        return {key: _reordered(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [_reordered(item) for item in value]
    return value


def _query(body: dict[str, Any], tenant: str = "acme", **control: Any) -> CacheQuery | None:
    return cache_query("chat", body, tenant, CacheControl(**control))


# -- no unexpected exception -------------------------------------------------------------------


@FUZZ
@given(body=bodies, tenant=st.text(max_size=10), kind=st.sampled_from(["chat", "completion"]))
def test_cache_query_never_raises(body: dict[str, Any], tenant: str, kind: Any) -> None:
    q = cache_query(kind, body, tenant, CacheControl(), allow_tools=bool(len(tenant) % 2))
    if q is not None:
        namespace, _, digest = q.scope.partition(":")
        assert namespace == "default" and DIGEST.match(digest) and DIGEST.match(q.exact_key)
        assert q.text and q.text == q.text.strip()
        assert q.model == body["model"] and q.tenant == tenant


@FUZZ
@given(header=st.none() | headers, extension=st.none() | cache_extensions)
def test_parse_cache_control_raises_only_invalid_cache_control(
    header: str | None, extension: Any
) -> None:
    try:
        control = parse_cache_control(header, extension)
    except InvalidCacheControl as exc:
        assert str(exc)
        return
    assert not (control.only_if_cached and not control.lookup)
    assert control.threshold is None or 0 < control.threshold <= 1
    assert control.ttl_s is None or control.ttl_s > 0


@FUZZ
@given(body=bodies, limit=limits, chat=st.booleans())
def test_validation_and_limits_raise_only_invalid_request(
    body: dict[str, Any], limit: LimitConfig, chat: bool
) -> None:
    try:
        parsed: ChatCompletionRequest | CompletionRequest = (
            validate_model(ChatCompletionRequest, body)
            if chat
            else validate_model(CompletionRequest, body)
        )
        enforce_limits(parsed, limit)
    except InvalidRequest as exc:
        assert exc.status_code == 400 and exc.body()["error"]["message"]
        return
    assert isinstance(parsed.model, str) and parsed.model
    if isinstance(parsed, ChatCompletionRequest):
        assert 1 <= len(parsed.messages) <= limit.max_messages


def _read(raw: bytes, max_bytes: int = 1 << 20) -> dict[str, Any]:
    """read_json on a real Starlette request whose body is ``raw``, sent in two chunks."""
    chunks = [raw[: len(raw) // 2], raw[len(raw) // 2 :]]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    scope = {"type": "http", "method": "POST", "headers": [], "path": "/", "query_string": b""}
    return asyncio.run(read_json(Request(scope, receive), max_bytes))


json_texts = st.one_of(
    json_values.map(json.dumps),
    bodies.map(json.dumps),
    st.integers(1, 3000).map(lambda depth: '{"a":' + "[" * depth + "]" * depth + "}"),
    st.integers(1, 3000).map(lambda depth: '{"a":' + '{"b":' * depth + "1" + "}" * depth + "}"),
    st.sampled_from(
        [
            '{"t": NaN}',
            '{"t": Infinity}',
            '{"t": -Infinity}',
            '{"t": 1e999}',
            '{"t": "\\ud800"}',
            '{"\\udfff": 1}',
            '{"t": "\\ud83d\\ude00"}',
            '{"t": ' + "9" * 5000 + "}",
        ]
    ),
    st.text(max_size=50),
)


@FUZZ
@given(text=json_texts, garbage=st.binary(max_size=8))
def test_read_json_raises_only_invalid_request_or_too_large(text: str, garbage: bytes) -> None:
    for raw in (text.encode("utf-8", "surrogatepass"), text.encode() + garbage if text else b""):
        try:
            body = _read(raw, max_bytes=64 * 1024)
        except (InvalidRequest, PayloadTooLarge) as exc:
            assert exc.status_code in (400, 413)
            continue
        assert isinstance(body, dict)
        json.dumps(body, allow_nan=False).encode("utf-8")  # forwardable as strict UTF-8 JSON


# -- the keys ------------------------------------------------------------------------------------

questions = st.text(min_size=1, max_size=40).filter(lambda t: t.strip())
chat_bodies = st.fixed_dictionaries(
    {
        "model": st.text(min_size=1, max_size=10),
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["system", "user", "assistant"]), "content": st.text()}
            ),
            max_size=3,
        ),
    },
    optional={
        "temperature": st.floats(0, 2),
        "max_tokens": st.integers(1, 100),
        "stop": st.lists(st.text(max_size=3), max_size=2),
        "response_format": st.dictionaries(st.text(max_size=5), json_values, max_size=3),
        "metadata": json_values,
        "vendor": json_values,
    },
)


@FUZZ
@given(body=chat_bodies, question=questions)
def test_keys_do_not_depend_on_member_order_or_surrounding_whitespace(
    body: dict[str, Any], question: str
) -> None:
    body = {**body, "messages": [*body["messages"], {"role": "user", "content": question}]}
    q = _query(body)
    assert q is not None
    same = _query(_reordered(body))
    assert same is not None and (same.scope, same.exact_key) == (q.scope, q.exact_key)
    padded = {
        **body,
        "messages": [*body["messages"][:-1], {"content": f"  {question}\r\n", "role": "user"}],
    }
    spaced = _query(padded)
    assert spaced is not None and (spaced.scope, spaced.exact_key) == (q.scope, q.exact_key)


@FUZZ
@given(
    body=chat_bodies,
    question=questions,
    other=st.text(min_size=1, max_size=10),
    system=st.text(max_size=20),
)
def test_keys_differ_across_tenants_models_namespaces_and_system_prompts(
    body: dict[str, Any], question: str, other: str, system: str
) -> None:
    body = {**body, "messages": [*body["messages"], {"role": "user", "content": question}]}
    q = _query(body)
    assert q is not None
    assume(other != "acme")
    variants = {
        "tenant": _query(body, tenant=other),
        "namespace": _query(body, namespace="other-namespace"),
        "model": _query({**body, "model": body["model"] + other}),
        "system prompt": _query(
            {**body, "messages": [{"role": "system", "content": system}, *body["messages"]]}
        ),
        "history": _query(
            {
                **body,
                "messages": [
                    *body["messages"][:-1],
                    {"role": "assistant", "content": other},
                    body["messages"][-1],
                ],
            }
        ),
    }
    for what, variant in variants.items():
        assert variant is not None, what
        assert variant.scope != q.scope, f"same scope for another {what}"
        assert variant.exact_key != q.exact_key, f"same exact key for another {what}"
