"""The circuit breaker's state machine, driven by a fake clock."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from gateway.routing.breaker import BreakerState, BreakerTransition, CircuitBreaker
from gateway.routing.config import BreakerConfig
from tests.routing.helpers import FakeClock

CLOSED, OPEN, HALF = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def make(clock: FakeClock, **config: Any) -> tuple[CircuitBreaker, list[BreakerTransition]]:
    seen: list[BreakerTransition] = []
    breaker = CircuitBreaker("e1", BreakerConfig(**config), clock=clock)
    breaker.add_listener(seen.append)
    return breaker, seen


def test_consecutive_failures_open_and_a_success_resets_the_count() -> None:
    breaker, seen = make(FakeClock(), failure_threshold=3, min_requests=100)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure("boom")
    breaker.record_success()  # resets the streak
    for _ in range(2):
        breaker.record_failure("boom")
    assert breaker.state is CLOSED
    breaker.record_failure("boom")
    assert breaker.state is OPEN
    assert not breaker.allow() and not breaker.can_pass()
    assert [(t.old, t.new) for t in seen] == [(CLOSED, OPEN)]
    assert "3 consecutive failures" in seen[0].reason


def test_error_ratio_over_the_window_opens() -> None:
    clock = FakeClock()
    breaker, _ = make(clock, failure_threshold=100, min_requests=10, error_ratio=0.5, window_s=10)
    for i in range(9):  # alternate: never 100 in a row, ratio ~0.5 but too few requests
        breaker.record_failure("x") if i % 2 else breaker.record_success()
    assert breaker.state is CLOSED
    breaker.record_failure("x")  # 10 requests, 5 failures -> 0.5
    assert breaker.state is OPEN


def test_old_outcomes_leave_the_window() -> None:
    clock = FakeClock()
    breaker, _ = make(clock, failure_threshold=100, min_requests=4, error_ratio=0.5, window_s=10)
    for _ in range(3):
        breaker.record_failure("x")
    clock.advance(11)  # those three failures are now outside the window
    breaker.record_success()
    breaker.record_success()
    breaker.record_success()
    breaker.record_failure("x")
    assert breaker.error_ratio() == pytest.approx(0.25)
    assert breaker.state is CLOSED


def test_half_open_after_cooldown_limits_trials_and_closes_on_success() -> None:
    clock = FakeClock()
    breaker, seen = make(clock, failure_threshold=1, cooldown_s=5, half_open_trials=2)
    breaker.record_failure("down")
    assert breaker.state is OPEN
    assert breaker.retry_in() == pytest.approx(5)
    clock.advance(4.9)
    assert not breaker.allow()
    clock.advance(0.2)
    assert breaker.state is HALF
    assert breaker.allow() and breaker.allow()
    assert not breaker.allow()  # only two trials at once
    breaker.release()  # one trial ended without a verdict: its slot frees
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is CLOSED
    assert [(t.old, t.new) for t in seen] == [(CLOSED, OPEN), (OPEN, HALF), (HALF, CLOSED)]


def test_failed_trial_reopens_with_a_doubled_cooldown() -> None:
    clock = FakeClock()
    breaker, _ = make(clock, failure_threshold=1, cooldown_s=2, max_cooldown_s=5)
    breaker.record_failure("down")
    for expected in (4, 5, 5):  # 2 -> 4 -> 5 (capped)
        clock.advance(10)
        assert breaker.allow()
        breaker.record_failure("still down")
        assert breaker.state is OPEN
        assert breaker.retry_in() == pytest.approx(expected)
    clock.advance(10)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is CLOSED
    breaker.record_failure("again")  # after closing, the cool-down is back to its base
    assert breaker.retry_in() == pytest.approx(2)


def test_transitions_are_logged_and_a_failing_listener_is_harmless(
    caplog: pytest.LogCaptureFixture,
) -> None:
    breaker = CircuitBreaker("engine-x", BreakerConfig(failure_threshold=1), clock=FakeClock())

    def broken(_: BreakerTransition) -> None:
        raise RuntimeError("metrics exporter bug")

    breaker.add_listener(broken)
    with caplog.at_level(logging.INFO, logger="gateway.routing.breaker"):
        breaker.record_failure("boom")
    assert breaker.state is OPEN
    assert any("circuit engine-x: closed -> open" in r.getMessage() for r in caplog.records)
    snap = breaker.snapshot()
    assert snap["state"] == "open" and snap["last_failure"] == "boom"
