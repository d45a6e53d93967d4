"""Request bodies and answers for the cache tests."""

from __future__ import annotations

import time
from typing import Any

from gateway.cache import CacheControl, CachedAnswer, CacheQuery, SemanticCache


def chat(
    text: str,
    *,
    model: str = "m1",
    system: str | None = "You are a helpful support agent.",
    history: tuple[tuple[str, str], ...] = (),
    **params: Any,
) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages += [{"role": role, "content": content} for role, content in history]
    messages.append({"role": "user", "content": text})
    return {"model": model, "messages": messages, **params}


def answer(text: str, *, finish_reason: str = "stop", model: str = "m1") -> CachedAnswer:
    return CachedAnswer(
        text=text,
        finish_reason=finish_reason,
        model=model,
        prompt_tokens=12,
        completion_tokens=7,
        created=time.time(),
    )


def q_chat(
    cache: SemanticCache,
    text: str,
    *,
    tenant: str = "acme",
    control: CacheControl | None = None,
    **kwargs: Any,
) -> CacheQuery:
    q = cache.query("chat", chat(text, **kwargs), tenant, control or CacheControl())
    assert q is not None, "expected a cacheable request"
    return q
