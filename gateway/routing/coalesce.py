"""Keyed single-flight with broadcast: identical concurrent work runs once, everyone gets it.

The first ``join(key, producer)`` starts the producer in its own task (the flight); every
subscriber, the first one included, reads the flight's events from the start: a late joiner
gets the events so far, then the live ones. If the producer fails, every subscriber gets the
same error. A subscriber that leaves does not stop the flight while others listen; when the
last one leaves, the producer is cancelled (which closes the upstream request). A finished
flight is forgotten, unless ``linger(flight, seconds)`` keeps one that ended well joinable a
little longer (late joiners replay it): the gap between an answer's end and its cache insert.

    sub = coalescer.join(key, producer)          # producer(meta) -> AsyncIterator[T]
    try:
        await sub.wait_started()                 # raises the producer's early error
        async for event in sub: ...
    finally:
        await sub.aclose()

Keys must include everything that changes the answer's shape (e.g. stream or not).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

Producer = Callable[[dict[str, Any]], AsyncIterator[T]]


class FlightAbandoned(Exception):
    """The flight was cancelled (its last subscriber left, or the gateway is stopping)."""


class Flight(Generic[T]):
    """One in-progress piece of work and everything it produced so far."""

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.events: list[T] = []
        self.meta: dict[str, Any] = {}  # the producer may note e.g. which engine answered
        self.done = False
        self.error: BaseException | None = None
        self.subscribers = 0
        self.joined = 0  # subscribers ever, the leader included
        self.lingering = False  # stays joinable for a while after it ends (Coalescer.linger)
        self.task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def changed(self) -> None:
        await self._changed.wait()


class Subscription(Generic[T]):
    """One waiter's view of a flight: an async iterator over all its events."""

    def __init__(self, owner: Coalescer[T], flight: Flight[T], *, leader: bool) -> None:
        self._owner = owner
        self.flight = flight
        self.is_leader = leader
        self._next = 0
        self._closed = False

    @property
    def meta(self) -> dict[str, Any]:
        return self.flight.meta

    async def wait_started(self) -> None:
        """Waits for the first event or the end; raises the flight's error if it failed
        before producing anything (so a handler can still answer with an error status)."""
        flight = self.flight
        while not flight.events and not flight.done:
            await flight.changed()
        if not flight.events and flight.error is not None:
            raise flight.error

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        flight = self.flight
        while self._next >= len(flight.events):
            if flight.done:
                if flight.error is not None:
                    raise flight.error
                raise StopAsyncIteration
            await flight.changed()
        event = flight.events[self._next]
        self._next += 1
        return event

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._owner._leave(self.flight)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class Coalescer(Generic[T]):
    def __init__(self) -> None:
        self._flights: dict[Hashable, Flight[T]] = {}
        self.flights_started = 0
        self.joins_coalesced = 0  # subscribers that did not start a flight

    @property
    def in_flight(self) -> int:
        return len(self._flights)

    def join(self, key: Hashable, producer: Producer[T]) -> Subscription[T]:
        """Subscribes to the flight for ``key``, starting it with ``producer`` if there is none.
        The producer gets the flight's ``meta`` dict, which every subscriber can read."""
        flight = self._flights.get(key)
        leader = flight is None
        if flight is None:
            flight = Flight(key)
            self._flights[key] = flight
            flight.task = asyncio.create_task(
                self._run(flight, producer), name=f"flight-{key!r:.40}"
            )
            self.flights_started += 1
        else:
            self.joins_coalesced += 1
        flight.subscribers += 1
        flight.joined += 1
        return Subscription(self, flight, leader=leader)

    async def call(self, key: Hashable, fn: Callable[[dict[str, Any]], Awaitable[T]]) -> T:
        """Single-flight for one result: concurrent callers with the same key share one call."""

        async def once(meta: dict[str, Any]) -> AsyncIterator[T]:
            yield await fn(meta)

        async with self.join(key, once) as subscription:
            async for result in subscription:
                return result
        raise FlightAbandoned(f"flight {key!r} ended without a result")

    async def _run(self, flight: Flight[T], producer: Producer[T]) -> None:
        try:
            async for event in producer(flight.meta):
                flight.events.append(event)
                flight.notify()
        except asyncio.CancelledError:
            flight.error = FlightAbandoned(f"flight {flight.key!r} was cancelled")
            raise
        except Exception as exc:  # every subscriber gets it
            flight.error = exc
        finally:
            flight.done = True
            if flight.error is not None or not flight.lingering:
                self._forget(flight)
            flight.notify()

    def linger(self, flight: Flight[T], seconds: float) -> None:
        """Keeps ``flight`` joinable for ``seconds`` after it ends well (unless a newer flight
        already took its key); a flight that fails is forgotten at once all the same."""
        if flight.error is not None:
            return
        flight.lingering = True
        self._flights.setdefault(flight.key, flight)
        asyncio.get_running_loop().call_later(seconds, self._forget, flight)

    def _leave(self, flight: Flight[T]) -> None:
        flight.subscribers -= 1
        if flight.subscribers > 0 or flight.done or flight.task is None:
            return
        self._forget(flight)  # newcomers start afresh instead of joining a dying flight
        flight.task.cancel()  # not awaited: the leaver may itself be being cancelled

    def _forget(self, flight: Flight[T]) -> None:
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
