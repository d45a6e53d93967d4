"""parse_cache_control: the Cache-Control header and the body's ``cache`` object."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.cache import CacheControl, InvalidCacheControl, parse_cache_control


def test_defaults_allow_everything() -> None:
    assert parse_cache_control(None, None) == CacheControl(
        lookup=True,
        store=True,
        only_if_cached=False,
        max_age_s=None,
        threshold=None,
        ttl_s=None,
        namespace="default",
    )


@pytest.mark.parametrize(
    ("header", "lookup", "store", "only_if_cached", "max_age"),
    [
        ("no-cache", False, True, False, None),
        ("no-store", False, False, False, None),
        ("only-if-cached", True, True, True, None),
        ("max-age=30", True, True, False, 30.0),
        ('max-age="30"', True, True, False, 30.0),
        ("max-age=0", True, True, False, 0.0),
        ("No-Cache, MAX-AGE=5", False, True, False, 5.0),
        ("no-cache, no-store", False, False, False, None),
        ("only-if-cached, max-age=10", True, True, True, 10.0),
        (" , max-stale=60 , private", True, True, False, None),  # unknown directives ignored
        ("", True, True, False, None),
    ],
)
def test_header_directives(
    header: str, lookup: bool, store: bool, only_if_cached: bool, max_age: float | None
) -> None:
    control = parse_cache_control(header, None)
    assert (control.lookup, control.store, control.only_if_cached, control.max_age_s) == (
        lookup,
        store,
        only_if_cached,
        max_age,
    )


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("max-age", "needs a value"),
        ("max-age=", "non-negative integer"),
        ("max-age=-1", "non-negative integer"),
        ("max-age=1.5", "non-negative integer"),
        ("max-age=abc", "non-negative integer"),
        ("max-age=٣", "non-negative integer"),  # a non-ASCII digit
        ("max-age=5, max-age=6", "two different max-age"),
        ("max-age = 5", "malformed"),
        ("no-cache; x", "malformed"),
        ("only-if-cached, no-cache", "only-if-cached cannot"),
        ("only-if-cached, no-store", "only-if-cached cannot"),
    ],
)
def test_bad_headers_are_rejected_with_a_clear_message(header: str, message: str) -> None:
    with pytest.raises(InvalidCacheControl, match=message):
        parse_cache_control(header, None)


def test_invalid_cache_control_is_a_value_error() -> None:
    assert issubclass(InvalidCacheControl, ValueError)


def test_extension_values() -> None:
    control = parse_cache_control(
        None, {"threshold": 0.9, "ttl": 600, "namespace": "faq", "max_age": 30}
    )
    assert control.threshold == 0.9
    assert control.ttl_s == 600.0
    assert control.namespace == "faq"
    assert control.max_age_s == 30.0
    assert control.lookup and control.store


def test_extension_and_header_combine() -> None:
    control = parse_cache_control("no-cache", {"namespace": "faq", "ttl": 5})
    assert (control.lookup, control.store, control.namespace, control.ttl_s) == (
        False,
        True,
        "faq",
        5.0,
    )
    assert parse_cache_control("max-age=5", {"max_age": 5}).max_age_s == 5.0


@pytest.mark.parametrize(
    ("extension", "message"),
    [
        ({"threshold": 0}, "threshold must be in"),
        ({"threshold": 1.5}, "threshold must be in"),
        ({"threshold": "high"}, "threshold must be a number"),
        ({"threshold": True}, "threshold must be a number"),
        ({"threshold": float("nan")}, "finite"),
        ({"ttl": 0}, "ttl must be > 0"),
        ({"ttl": -5}, "ttl must be > 0"),
        ({"ttl": 10**400}, "finite"),
        ({"max_age": -1}, "max_age must be >= 0"),
        ({"namespace": ""}, "namespace must be"),
        ({"namespace": "a:b"}, "namespace must be"),
        ({"namespace": "x" * 65}, "namespace must be"),
        ({"namespace": 7}, "namespace must be"),
        ({"treshold": 0.9}, "unknown cache option"),
    ],
)
def test_bad_extensions_are_rejected(extension: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidCacheControl, match=message):
        parse_cache_control(None, extension)


def test_extension_must_be_an_object() -> None:
    with pytest.raises(InvalidCacheControl, match="must be an object"):
        parse_cache_control(None, ["faq"])  # type: ignore[arg-type]


def test_header_and_extension_max_age_must_agree() -> None:
    with pytest.raises(InvalidCacheControl, match="differ"):
        parse_cache_control("max-age=5", {"max_age": 6})


def test_null_namespace_means_default() -> None:
    assert parse_cache_control(None, {"namespace": None}).namespace == "default"
