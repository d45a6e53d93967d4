"""Backpressure: a bounded number of running requests per model and a bounded waiting queue.

A model's capacity is the sum of ``max_in_flight`` over its routable engines, so an admitted
request always finds an engine with room (the balancer never exceeds an engine's
``max_in_flight``). Beyond that, requests wait in one FIFO queue (shared by all models, at most
``queue_size`` entries) for at most ``max_wait_s``; a full queue or an expired wait is a 429
whose Retry-After is estimated from how long slots are being held.

    async with admission.slot(model) as ticket:
        ...  # the upstream call, streamed answer included
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from gateway.routing.config import AdmissionConfig
from gateway.routing.errors import QueueFull, QueueTimeout

_RECHECK_S = 0.25


@dataclass
class Ticket:
    """An admitted request: how long it queued."""

    model: str
    waited_s: float = 0.0


@dataclass
class _Waiter:
    model: str
    future: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Admission:
    def __init__(
        self,
        capacity: Callable[[str], int],
        config: AdmissionConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``capacity(model)``: how many requests for the model may run now (e.g.
        ``BackendPool.capacity``). A capacity of 0 (no routable engine) admits at once, so
        the upstream client can answer 503 instead of the queue answering 429."""
        self._capacity = capacity
        self._cfg = config or AdmissionConfig()
        self._clock = clock
        self._running: dict[str, int] = {}
        self._queue: deque[_Waiter] = deque()
        self._hold_ewma_s = 1.0  # how long a slot is held, smoothed
        self.rejected = 0  # 429s given, for metrics

    # -- metrics ---------------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        return sum(self._running.values())

    def stats(self) -> dict[str, Any]:
        return {
            "in_flight": dict(self._running),
            "queue_depth": self.queue_depth,
            "queue_size": self._cfg.queue_size,
            "rejected": self.rejected,
            "slot_hold_ewma_s": round(self._hold_ewma_s, 3),
        }

    # -- the slot --------------------------------------------------------------------------

    @asynccontextmanager
    async def slot(self, model: str) -> AsyncIterator[Ticket]:
        """Holds one of the model's slots for the body of the ``async with``; raises
        ``RateLimited`` (a QueueFull / QueueTimeout) when it cannot get one in time."""
        if not self._cfg.enabled:
            yield Ticket(model)
            return
        started = self._clock()
        await self._acquire(model)
        ticket = Ticket(model, self._clock() - started)
        held_from = self._clock()
        try:
            yield ticket
        finally:
            self._hold_ewma_s += 0.2 * (self._clock() - held_from - self._hold_ewma_s)
            self._release(model)

    @asynccontextmanager
    async def spare_slot(self, model: str) -> AsyncIterator[Ticket | None]:
        """One of the model's slots only if it is free now and nobody waits for one, else None
        (never queues). For background work that must not delay requests (cache audits): it
        holds the slot like a request, so requests arriving meanwhile see it taken."""
        if not self.has_spare(model):
            yield None
            return
        self._running[model] = self._running.get(model, 0) + 1
        try:
            yield Ticket(model)
        finally:
            self._release(model)

    def has_spare(self, model: str) -> bool:
        """A slot of the model is free now and nobody waits for one (and an engine serves it)."""
        return not self._queue and self._capacity(model) > 0 and self._fits(model)

    def retry_after_s(self) -> float:
        """A guess at when a slot frees up for a newcomer."""
        per_slot = self._hold_ewma_s / max(1, self.in_flight)
        return max(1.0, per_slot * (self.queue_depth + 1))

    async def _acquire(self, model: str) -> None:
        if self._fits(model) and not any(w.model == model for w in self._queue):
            self._running[model] = self._running.get(model, 0) + 1
            return
        if len(self._queue) >= self._cfg.queue_size:
            self.rejected += 1
            raise QueueFull(
                "Too many requests are waiting for an engine; retry later.",
                retry_after_s=self.retry_after_s(),
            )
        waiter = _Waiter(model)
        self._queue.append(waiter)
        try:
            await self._wait(waiter)
        except BaseException:  # cancelled while waiting (the client went away)
            if waiter.future.done():
                self._release(model)  # granted at the same moment: give it back
            elif waiter in self._queue:
                self._queue.remove(waiter)
            raise

    async def _wait(self, waiter: _Waiter) -> None:
        """Waits for the grant; re-checks capacity now and then, since it also grows when an
        engine comes back (no release happens then)."""
        deadline = self._clock() + self._cfg.max_wait_s
        while not waiter.future.done():
            remaining = deadline - self._clock()
            if remaining <= 0:
                self._queue.remove(waiter)
                self.rejected += 1
                raise QueueTimeout(
                    f"No engine freed up within {self._cfg.max_wait_s:g} s; retry later.",
                    retry_after_s=self.retry_after_s(),
                )
            try:
                async with asyncio.timeout(min(remaining, _RECHECK_S)):
                    await asyncio.shield(waiter.future)
            except TimeoutError:
                self.wake()

    def _fits(self, model: str) -> bool:
        capacity = self._capacity(model)
        return capacity <= 0 or self._running.get(model, 0) < capacity

    def _release(self, model: str) -> None:
        self._running[model] -= 1
        if not self._running[model]:
            del self._running[model]
        self.wake()

    def wake(self) -> None:
        """Grants queued requests whose model has room, oldest first. Call it too when
        capacity grows (an engine came back)."""
        blocked: set[str] = set()
        for waiter in list(self._queue):
            if waiter.model in blocked:
                continue
            if self._fits(waiter.model):
                self._queue.remove(waiter)
                self._running[waiter.model] = self._running.get(waiter.model, 0) + 1
                waiter.future.set_result(None)
            else:
                blocked.add(waiter.model)  # keep FIFO order within a model
