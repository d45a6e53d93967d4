"""cache.max_false_hit_rate: the operating point chosen after a warm-up, on both stores."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from gateway.cache import CacheControl, SemanticCache
from gateway.cache.calibration import wilson_upper
from tests.cache.conftest import MakeCache

FAQ = Path(__file__).resolve().parents[2] / "examples" / "faq.jsonl"
ENTRIES: list[dict[str, Any]] = [
    json.loads(line) for line in FAQ.read_text().splitlines() if line.strip()
]
# Not in the FAQ file; cosine 0.967 to "How do I reset my password?"
PARAPHRASE = "How do I reset my password please?"


def test_wilson_upper_bound() -> None:
    assert wilson_upper(0, 0) == 1.0
    assert wilson_upper(0, 4000) == pytest.approx(0.00068, abs=2e-5)  # 1.645^2 / n
    assert wilson_upper(5, 100) > 0.05 > wilson_upper(5, 1000)
    assert wilson_upper(100, 100) == 1.0


async def _ask(cache: SemanticCache, text: str) -> str:
    body = {"model": "m1", "messages": [{"role": "user", "content": text}]}
    q = cache.query("chat", body, "acme", CacheControl())
    assert q is not None
    return (await cache.lookup(q)).status


async def test_a_warm_up_calibrates_its_scope(make_cache: MakeCache) -> None:
    cache = await make_cache(max_false_hit_rate=0.1)
    assert await cache.warm("m1", ENTRIES, "acme") == len(ENTRIES)
    [point] = (await cache.stats())["operating_points"]
    assert point["model"] == "m1" and point["namespace"] == "default"
    assert point["probes"] == len(ENTRIES)  # every FAQ answer has several phrasings
    assert point["met"] is True
    assert point["false_hit_upper"] <= 0.1
    assert 0 <= point["false_hit_rate"] <= point["false_hit_upper"]
    assert point["hit_rate"] > 0.1
    assert await _ask(cache, PARAPHRASE) == "hit-semantic"


async def test_a_target_the_entries_cannot_prove_makes_the_tier_strict(
    make_cache: MakeCache,
) -> None:
    """52 probes cannot show a false-hit rate under 0.1 % (the bound alone is ~5 %): the
    strictest point is used (threshold 0.99, verifier off) and the estimate says it is unmet."""
    loose = await make_cache()
    strict = await make_cache(max_false_hit_rate=0.001)
    for cache in (loose, strict):
        await cache.warm("m1", ENTRIES, "acme")
    assert (await loose.stats())["operating_points"] == []  # no target: as configured
    [point] = (await strict.stats())["operating_points"]
    assert point["met"] is False and point["threshold"] == 0.99 and point["cut"] == "off"
    assert await _ask(loose, PARAPHRASE) == "hit-semantic"
    assert await _ask(strict, PARAPHRASE) == "miss"
    assert await _ask(strict, "How do I reset my password?") == "hit-exact"


async def test_per_namespace_target_and_explicit_thresholds(make_cache: MakeCache) -> None:
    cache = await make_cache(
        namespace_max_false_hit_rates={"faq": 0.001}, model_thresholds={"m2": 0.9}
    )
    await cache.warm("m1", ENTRIES, "acme")  # no global target: not calibrated
    await cache.warm("m1", ENTRIES, "acme", namespace="faq")
    await cache.warm("m2", ENTRIES, "acme", namespace="faq")  # m2's threshold is explicit
    points = (await cache.stats())["operating_points"]
    assert [(p["model"], p["namespace"]) for p in points] == [("m1", "faq")]
    assert not math.isnan(points[0]["false_hit_upper"])


async def test_the_estimate_is_exported_as_metrics(make_cache: MakeCache) -> None:
    from prometheus_client import generate_latest

    from gateway.observability import Metrics

    metrics = Metrics()
    cache = await make_cache(max_false_hit_rate=0.1)
    cache.observer = metrics.cache_hooks
    await cache.warm("m1", ENTRIES, "acme")
    [point] = (await cache.stats())["operating_points"]
    text = generate_latest(metrics.registry).decode()
    labels = 'model="m1",namespace="default"'
    assert f'gateway_cache_false_hit_rate_estimate{{bound="target",{labels}}} 0.1' in text
    upper = f'gateway_cache_false_hit_rate_estimate{{bound="upper",{labels}}}'
    assert float(text.split(upper)[1].split()[0]) == pytest.approx(point["false_hit_upper"])
    assert f"gateway_cache_calibrated_hit_rate{{{labels}}}" in text
