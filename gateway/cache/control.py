"""Per-request cache control: the HTTP ``Cache-Control`` header and the body's ``cache`` object.

Header directives (RFC 9111 request directives, names case-insensitive, unknown ones ignored):

- ``no-cache``: do not answer from the cache, but store the fresh answer.
- ``no-store``: neither answer from the cache nor store the answer.
- ``only-if-cached``: answer from the cache or fail (the gateway says 504); never call an engine.
- ``max-age=N``: only entries at most N seconds old may answer.

Body extension (``extra_body={"cache": {...}}`` with the official client), all keys optional:
``threshold`` (cosine in (0, 1]), ``ttl`` (seconds > 0), ``namespace`` (1-64 of
``[A-Za-z0-9_.-]``), ``max_age`` (seconds >= 0, like the header's). Unknown keys are rejected so
that a typo does not pass silently.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_NAMESPACE = "default"
NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_DIRECTIVE_RE = re.compile(r'^([!#$%&\'*+.^_`|~0-9A-Za-z-]+)(?:=("(?:[^"\\]|\\.)*"|[^",\s]*))?$')
_EXTENSION_KEYS = ("threshold", "ttl", "namespace", "max_age")


class InvalidCacheControl(ValueError):
    """A Cache-Control header or ``cache`` body object the gateway cannot honour (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class CacheControl:
    """What one request allows the cache to do."""

    lookup: bool = True
    store: bool = True
    only_if_cached: bool = False
    max_age_s: float | None = None
    threshold: float | None = None
    ttl_s: float | None = None
    namespace: str = DEFAULT_NAMESPACE


def parse_cache_control(header: str | None, extension: Mapping[str, Any] | None) -> CacheControl:
    """Combine the header and the body extension; raise InvalidCacheControl on bad values."""
    lookup, store, only_if_cached, header_max_age = _parse_header(header)
    threshold, ttl_s, namespace, body_max_age = _parse_extension(extension)
    if header_max_age is not None and body_max_age is not None and header_max_age != body_max_age:
        raise InvalidCacheControl("max-age in the Cache-Control header and cache.max_age differ")
    if only_if_cached and not lookup:
        raise InvalidCacheControl(
            "only-if-cached cannot be combined with no-cache or no-store (it could never succeed)"
        )
    return CacheControl(
        lookup=lookup,
        store=store,
        only_if_cached=only_if_cached,
        max_age_s=header_max_age if header_max_age is not None else body_max_age,
        threshold=threshold,
        ttl_s=ttl_s,
        namespace=namespace,
    )


def _parse_header(header: str | None) -> tuple[bool, bool, bool, float | None]:
    lookup = store = True
    only_if_cached = False
    max_age: float | None = None
    if header is None:
        return lookup, store, only_if_cached, max_age
    for raw in header.split(","):
        part = raw.strip()
        if not part:
            continue
        match = _DIRECTIVE_RE.match(part)
        if match is None:
            raise InvalidCacheControl(f"malformed Cache-Control directive {part!r}")
        name, value = match.group(1).lower(), match.group(2)
        if name == "no-store":
            lookup = store = False
        elif name == "no-cache":
            lookup = False
        elif name == "only-if-cached":
            only_if_cached = True
        elif name == "max-age":
            seconds = _delta_seconds(value)
            if max_age is not None and max_age != seconds:
                raise InvalidCacheControl("Cache-Control has two different max-age values")
            max_age = seconds
        # RFC 9111 5.2: a cache ignores directives it does not understand.
    return lookup, store, only_if_cached, max_age


def _delta_seconds(value: str | None) -> float:
    if value is None:
        raise InvalidCacheControl("Cache-Control max-age needs a value, e.g. max-age=60")
    digits = value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    if not digits.isascii() or not digits.isdigit():
        raise InvalidCacheControl(
            f"Cache-Control max-age must be a non-negative integer of seconds, got {value!r}"
        )
    return float(int(digits))


def _parse_extension(
    extension: Mapping[str, Any] | None,
) -> tuple[float | None, float | None, str, float | None]:
    if extension is None:
        return None, None, DEFAULT_NAMESPACE, None
    if not isinstance(extension, Mapping):
        raise InvalidCacheControl('cache must be an object, e.g. {"namespace": "faq"}')
    unknown = sorted(str(key) for key in extension if key not in _EXTENSION_KEYS)
    if unknown:
        raise InvalidCacheControl(
            f"unknown cache option(s) {', '.join(unknown)}; allowed: {', '.join(_EXTENSION_KEYS)}"
        )
    threshold = _number(extension, "threshold")
    if threshold is not None and not 0 < threshold <= 1:
        raise InvalidCacheControl(f"cache.threshold must be in (0, 1], got {threshold}")
    ttl = _number(extension, "ttl")
    if ttl is not None and ttl <= 0:
        raise InvalidCacheControl(f"cache.ttl must be > 0 seconds, got {ttl}")
    max_age = _number(extension, "max_age")
    if max_age is not None and max_age < 0:
        raise InvalidCacheControl(f"cache.max_age must be >= 0 seconds, got {max_age}")
    namespace = extension.get("namespace", DEFAULT_NAMESPACE)
    if namespace is None:
        namespace = DEFAULT_NAMESPACE
    if not isinstance(namespace, str) or not NAMESPACE_RE.match(namespace):
        raise InvalidCacheControl(
            "cache.namespace must be 1-64 characters of letters, digits, '_', '.', '-'"
        )
    return threshold, ttl, namespace, max_age


def _number(extension: Mapping[str, Any], key: str) -> float | None:
    value = extension.get(key)
    if value is None:
        return None
    # bool is an int in Python; true/false is never a meaningful number here.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidCacheControl(f"cache.{key} must be a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise InvalidCacheControl(f"cache.{key} must be finite, got {value!r}")
    return number
