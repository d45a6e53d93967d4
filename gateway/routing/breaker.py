"""A circuit breaker per engine: passive health from the outcomes of real requests.

closed --(N consecutive failures, or error ratio over a rolling window)--> open
open --(cool-down elapsed)--> half_open: a few trial requests pass
half_open --(trial successes)--> closed;  half_open --(a failure)--> open (cool-down doubles)

Every request that ``allow()`` let through must end in exactly one of ``record_success()``,
``record_failure()`` or ``release()`` (no verdict, e.g. the client went away), so that
half-open trial slots never leak. Single-threaded (one event loop); no locks needed.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.routing.config import BreakerConfig

log = logging.getLogger(__name__)


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerTransition:
    name: str
    old: BreakerState
    new: BreakerState
    reason: str
    at: float


BreakerListener = Callable[[BreakerTransition], None]


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        listeners: list[BreakerListener] | None = None,
    ) -> None:
        self.name = name
        self._cfg = config or BreakerConfig()
        self._clock = clock
        self._listeners = listeners if listeners is not None else []
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._window: deque[tuple[float, bool]] = deque()  # (time, failed)
        self._opened_at = 0.0
        self._cooldown = self._cfg.cooldown_s
        self._trials = 0  # trial requests in flight while half-open
        self._trial_successes = 0
        self.last_failure: str | None = None

    # -- reading ---------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker whose cool-down elapsed reads as half-open)."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self._cooldown:
            self._transition(BreakerState.HALF_OPEN, "cool-down elapsed")
        return self._state

    def can_pass(self) -> bool:
        """Whether a request could pass now, without reserving a trial slot."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN:
            return self._trials < self._cfg.half_open_trials
        return False

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a trial through (0 when not open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self._cooldown - self._clock())

    def error_ratio(self) -> float:
        self._trim()
        if not self._window:
            return 0.0
        return sum(failed for _, failed in self._window) / len(self._window)

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "consecutive_failures": self._consecutive,
            "window_requests": len(self._window),
            "window_error_ratio": round(self.error_ratio(), 3),
            "retry_in_s": round(self.retry_in(), 3),
            "last_failure": self.last_failure,
        }

    def add_listener(self, listener: BreakerListener) -> None:
        self._listeners.append(listener)

    # -- the request protocol --------------------------------------------------------------

    def allow(self) -> bool:
        """Let one request through? In half-open this reserves one of the trial slots."""
        if not self.can_pass():
            return False
        if self._state is BreakerState.HALF_OPEN:
            self._trials += 1
        return True

    def record_success(self) -> None:
        self._end_trial()
        self._consecutive = 0
        self._remember(failed=False)
        if self._state is BreakerState.HALF_OPEN:
            self._trial_successes += 1
            if self._trial_successes >= self._cfg.successes_to_close:
                self._cooldown = self._cfg.cooldown_s
                self._window.clear()
                self._transition(BreakerState.CLOSED, "trial request succeeded")

    def record_failure(self, reason: str = "failure") -> None:
        self._end_trial()
        self.last_failure = reason
        self._consecutive += 1
        self._remember(failed=True)
        state = self.state
        if state is BreakerState.HALF_OPEN:
            self._cooldown = min(self._cooldown * 2, self._cfg.max_cooldown_s)
            self._open(f"trial request failed: {reason}")
        elif state is BreakerState.CLOSED:
            if self._consecutive >= self._cfg.failure_threshold:
                self._open(f"{self._consecutive} consecutive failures, last: {reason}")
            elif len(self._window) >= self._cfg.min_requests and (
                self.error_ratio() >= self._cfg.error_ratio
            ):
                self._open(f"error ratio {self.error_ratio():.2f} over {self._cfg.window_s:g} s")

    def release(self) -> None:
        """The request ended without telling anything about the engine's health."""
        self._end_trial()

    def force_open(self, reason: str) -> None:
        """Open now (e.g. an operator drains the engine)."""
        if self._state is not BreakerState.OPEN:
            self._open(reason)

    # -- internals -------------------------------------------------------------------------

    def _open(self, reason: str) -> None:
        self._opened_at = self._clock()
        self._transition(BreakerState.OPEN, reason)

    def _end_trial(self) -> None:
        if self._state is BreakerState.HALF_OPEN and self._trials > 0:
            self._trials -= 1

    def _remember(self, *, failed: bool) -> None:
        self._window.append((self._clock(), failed))
        self._trim()

    def _trim(self) -> None:
        horizon = self._clock() - self._cfg.window_s
        while self._window and self._window[0][0] < horizon:
            self._window.popleft()

    def _transition(self, new: BreakerState, reason: str) -> None:
        old, self._state = self._state, new
        if new is BreakerState.HALF_OPEN:
            self._trials = 0
            self._trial_successes = 0
        if new is BreakerState.CLOSED:
            self._consecutive = 0
        level = logging.WARNING if new is BreakerState.OPEN else logging.INFO
        log.log(level, "circuit %s: %s -> %s (%s)", self.name, old.value, new.value, reason)
        event = BreakerTransition(self.name, old, new, reason, time.time())
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a metrics hook must never break routing
                log.exception("breaker listener failed")
