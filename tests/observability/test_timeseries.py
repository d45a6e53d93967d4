"""The dashboard's per-second history over real prometheus metric objects (no server)."""

from __future__ import annotations

import math

import pytest

from gateway.observability import Metrics
from gateway.timeseries import BOUNDS, Sampler, quantile

CHAT = "/v1/chat/completions"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_quantile_interpolates_like_histogram_quantile() -> None:
    bounds = (0.1, 0.5, 1.0, math.inf)
    counts = (10.0, 30.0, 40.0, 40.0)  # 10 below 0.1, 20 in (0.1, 0.5], 10 in (0.5, 1]
    assert quantile(0.25, bounds, counts) == pytest.approx(0.1)
    assert quantile(0.5, bounds, counts) == pytest.approx(0.1 + 0.4 * 10 / 20)
    assert quantile(0.05, bounds, counts) == pytest.approx(0.02)  # rank 2 of the first 10
    assert quantile(1.0, bounds, counts) == pytest.approx(1.0)
    assert quantile(0.99, bounds, (0.0, 0.0, 0.0, 5.0)) == 1.0  # +Inf: highest finite bound
    assert quantile(0.5, bounds, (0.0, 0.0, 0.0, 0.0)) is None
    assert quantile(0.5, bounds, ()) is None


def _request(metrics: Metrics, cache: str, seconds: float, status: str = "200") -> None:
    metrics.requests.labels(CHAT, status, cache).inc()
    metrics.request_seconds.labels(CHAT, cache, "", "m").observe(seconds)
    if cache != "none":
        metrics.cache_lookups.labels(cache).inc()


def test_sampler_turns_counters_into_rates_ratios_and_percentiles() -> None:
    metrics, clock = Metrics(), Clock()
    sampler = Sampler(metrics, every_s=1.0, history_s=60, clock=clock)
    sampler.sample()
    for _ in range(3):
        _request(metrics, "miss", 2.0)
    _request(metrics, "hit-exact", 0.004)
    metrics.tokens_saved.labels("m").inc(120)
    metrics.cost_saved.labels("m").inc(0.24)
    clock.now += 1
    sampler.sample()
    _request(metrics, "hit-semantic", 0.02)
    _request(metrics, "none", 0.001, status="429")
    clock.now += 2  # a late tick: rates divide by the real interval
    sampler.sample()

    data = sampler.data(window_s=60)
    series = data["series"]
    assert series["t"] == [1001.0, 1003.0]
    # Rates over the trailing 5 s (here: since the first sample, 1 s and 3 s before).
    assert series["rps"] == [4.0, 2.0]
    assert series["requests_by_cache"]["miss"] == [3.0, 1.0]
    assert series["requests_by_cache"]["hit-semantic"] == [0.0, round(1 / 3, 4)]
    assert series["rejected_ps"] == [0.0, round(1 / 3, 4)]
    assert series["hit_ratio"] == [0.25, 0.4]
    assert series["tokens_saved"] == [120.0, 120.0]
    assert series["cost_saved"] == [0.24, 0.24]
    # 3 of 4 answers took 2 s: the median lies in the (1.5, 2] bucket; the fastest in (0, 5 ms].
    p50, p99 = series["p50"][0], series["p99"][0]
    assert p50 is not None and 1.5 < p50 <= 2.0
    assert p99 is not None and p99 <= 2.0
    fastest = quantile(0.1, BOUNDS, _cumulative([0.004, 2, 2, 2]))
    assert fastest is not None and fastest <= 0.005
    summary = data["summary"]
    assert summary["requests"] == 6
    assert summary["hits"] == 2 and summary["misses"] == 3
    assert summary["hit_ratio"] == 0.4
    assert summary["rejected"] == 1


def _cumulative(values: list[float]) -> list[float]:
    return [float(sum(v <= bound for v in values)) for bound in BOUNDS]


def test_window_and_ring_are_bounded() -> None:
    metrics, clock = Metrics(), Clock()
    sampler = Sampler(metrics, every_s=1.0, history_s=30, clock=clock)
    for _ in range(100):
        sampler.sample()
        clock.now += 1
    assert len(sampler.data(window_s=600)["series"]["t"]) == 30  # 31 samples kept, 30 diffs
    assert len(sampler.data(window_s=10)["series"]["t"]) == 10


def test_engine_lanes_follow_health_and_breaker_gauges() -> None:
    metrics, clock = Metrics(), Clock()
    sampler = Sampler(metrics, clock=clock)
    metrics.backend_up.labels("http://a").set(1)
    metrics.breaker_state.labels("http://a").set(0)
    sampler.sample()
    clock.now += 1
    sampler.sample()
    metrics.backend_up.labels("http://a").set(0)
    metrics.breaker_state.labels("http://a").set(2)
    metrics.backend_up.labels("http://b").set(1)
    clock.now += 1
    sampler.sample()
    lanes = sampler.data()["backends"]
    assert lanes["http://a"] == {"up": [1, 0], "breaker": [0, 2]}
    assert lanes["http://b"] == {"up": [None, 1], "breaker": [None, 0]}


def test_a_fresh_sampler_has_no_points_yet() -> None:
    sampler = Sampler(Metrics())
    sampler.sample()
    data = sampler.data()
    assert data["series"]["t"] == []
    assert data["summary"]["hit_ratio"] is None
