"""Validating cache warm-up entries (POST /admin/cache/warm, ``gateway cache warm FILE``).

An entry is ``{"messages": [...], "answer": "..."}`` (chat) or ``{"prompt": "...", "answer":
"..."}`` (completion). Optional keys: ``"params"`` (request fields such as ``temperature`` or
``max_tokens``; they are part of the scope, so a warmed answer is only served to requests that
send the same ones), ``"ttl"`` (seconds), ``"prompt_tokens"`` and ``"completion_tokens"`` (for
the tokens-saved figure). Warmed answers count as complete (finish_reason "stop").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.cache.control import NAMESPACE_RE, CacheControl
from gateway.cache.entry import CachedAnswer
from gateway.cache.policy import CacheQuery, Kind, cache_query


@dataclass(frozen=True, slots=True)
class WarmItem:
    query: CacheQuery
    answer: CachedAnswer
    ttl_s: float | None


def plan_warm(
    entries: Iterable[Mapping[str, Any]],
    *,
    model: str,
    tenant: str,
    namespace: str,
    params: Mapping[str, Any] | None,
    ttl_s: float | None,
    allow_tools: bool,
    now: float,
    embedder: str = "",
) -> list[WarmItem]:
    """Every entry as a cache query and answer; ValueError names the first invalid entry."""
    if not NAMESPACE_RE.match(namespace):
        raise ValueError(f"invalid namespace {namespace!r}")
    control = CacheControl(namespace=namespace)
    items = []
    for index, item in enumerate(entries):
        if not isinstance(item, Mapping):
            raise ValueError(f"entry {index}: must be an object")
        answer, extra = item.get("answer"), item.get("params") or {}
        if not isinstance(answer, str) or not answer:
            raise ValueError(f"entry {index}: answer must be a non-empty string")
        if not isinstance(extra, Mapping):
            raise ValueError(f"entry {index}: params must be an object")
        ttl = item.get("ttl", ttl_s)
        if ttl is not None and not (_number(ttl) and ttl > 0):
            raise ValueError(f"entry {index}: ttl must be a positive number of seconds")
        tokens = {key: item.get(key, 0) for key in ("prompt_tokens", "completion_tokens")}
        if not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in tokens.values()
        ):
            raise ValueError(f"entry {index}: token counts must be non-negative integers")
        kind: Kind = "completion" if "prompt" in item else "chat"
        field = "prompt" if kind == "completion" else "messages"
        body = {**(params or {}), **extra, "model": model, field: item.get(field)}
        query = cache_query(kind, body, tenant, control, allow_tools=allow_tools, embedder=embedder)
        if query is None:
            raise ValueError(
                f"entry {index}: not cacheable (needs messages ending with a user text message, "
                "or a prompt string, and no option that makes a request uncacheable)"
            )
        cached = CachedAnswer(
            text=answer,
            finish_reason="stop",
            model=model,
            prompt_tokens=tokens["prompt_tokens"],
            completion_tokens=tokens["completion_tokens"],
            created=now,
        )
        items.append(WarmItem(query, cached, None if ttl is None else float(ttl)))
    return items


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
