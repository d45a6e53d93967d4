"""Single flight across gateway replicas: one engine call per identical miss, cluster-wide.

The in-process Coalescer (coalesce.py) shares one flight among a replica's identical requests;
``SharedFlights.wrap`` turns that flight's producer into one that first asks Redis who leads:

- **lease**: ``SET <lease> <token> NX PX lease_ms``. The replica that gets it is the leader: it
  runs the real producer (router -> engine), streams live to its own subscribers, and renews the
  lease every lease_ms / 3 while it works, so a leader that dies (SIGKILL, partition) loses it
  within ``lease_ms``.
- **answer**: the leader's finished answer (all its events and its meta) is written to
  ``<answer>`` with a short TTL and announced on a pub/sub channel, in one Lua script that also
  drops the lease. Followers, subscribed before they look, wake up and replay it at once.
  A follower that was not waiting when the answer landed (a late joiner) takes it only if the
  leader marked it reusable (the cache would keep it); otherwise it leads a fresh flight.
- **takeover**: a follower waits at most the lease's remaining time for a message; when the
  lease is gone without an answer (leader died, failed or left), the next follower to try
  ``SET NX`` leads. A leader that fails or is cancelled releases the lease and says so, so
  followers retry at once instead of waiting for it to expire.

Redis trouble never fails a request: any Redis error or timeout before leading means leading
alone (the engine is called, as with one replica); errors while leading are logged and ignored.
After a failure Redis is left alone for ``retry_s``. Every key of one flight shares a hash tag
(``{digest}``), so the scripts stay on one slot of a Redis Cluster.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.cancellation import raise_if_cancelled
from gateway.redis_connect import RedisClient
from gateway.routing.coalesce import Producer
from gateway.routing.config import SharedFlightConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

REMOTE = "shared_follower"  # meta flag: this flight replayed another replica's answer
WARN_EVERY_S = 10.0
# Any failure of a Redis call is Redis trouble, never the request's: besides REDIS_ERRORS, redis-py
# 8.1's cluster client was seen raising AttributeError from a connection it broke itself.
_REDIS_ERRORS: tuple[type[BaseException], ...] = (Exception,)

# KEYS: lease, answer. ARGV: token, lease ms, '1' to accept an answer not marked reusable.
# Returns {'answer', payload} | {'lead'} | {'wait', lease pttl ms}.
CLAIM = """
local a = redis.call('GET', KEYS[2])
if a and (ARGV[3] == '1' or string.sub(a, 1, 1) == 'R') then return {'answer', a} end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'lead'} end
return {'wait', redis.call('PTTL', KEYS[1])}
"""
# KEYS: lease. ARGV: token, lease ms. 1 while the lease is still ours.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# KEYS: lease, answer. ARGV: token, payload ('' = none: the flight failed), answer ttl ms,
# channel. Stores the answer, drops the lease (if still ours) and wakes the followers.
FINISH = """
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('PUBLISH', ARGV[4], ARGV[2] == '' and 'released' or 'done')
return 1
"""


@dataclass(frozen=True)
class Codec(Generic[T]):
    """How a flight's events become bytes in Redis and back."""

    encode: Callable[[T], bytes]
    decode: Callable[[bytes], T]


BYTES: Codec[bytes] = Codec(lambda b: b, lambda b: b)
JSON: Codec[Any] = Codec(lambda v: json.dumps(v).encode(), json.loads)


def flight_key(parts: object) -> str:
    """A stable digest of an in-process flight key (its parts must be JSON-serialisable)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


class SharedFlights:
    """See the module docstring. ``wrap`` is the only entry point of the request path."""

    def __init__(
        self,
        client: RedisClient,
        config: SharedFlightConfig | None = None,
        *,
        prefix: str = "semcache",
    ) -> None:
        self._r = client
        self.config = config or SharedFlightConfig()
        self._prefix = prefix
        self._claim = client.register_script(CLAIM)
        self._renew = client.register_script(RENEW)
        self._finish = client.register_script(FINISH)
        self._finishing: set[asyncio.Task[None]] = set()
        self._down_until = 0.0
        self._warned_at = -math.inf
        # Each flight counted once, by how it went (exported as gateway_shared_flights_total):
        self.led = 0  # got the lease at once and called the engine
        self.took_over = 0  # got the lease after waiting on a leader that died, failed or left
        self.followed = 0  # answered by another replica's leader
        self.alone = 0  # called the engine without a lease (Redis trouble, or waited too long)

    def wrap(
        self,
        key: str,
        lead: Producer[T],
        codec: Codec[T],
        reusable: Callable[[list[T]], bool] = lambda _: False,
    ) -> Producer[T]:
        """A producer for ``Coalescer.join``: runs ``lead`` if this replica gets the lease
        (or Redis is unavailable), else replays the leader's answer. ``reusable(events)`` says
        whether a late joiner may take the finished answer too (the cache would keep it)."""

        async def produce(meta: dict[str, Any]) -> AsyncIterator[T]:
            names = self._names(key)
            token = uuid.uuid4().hex
            try:
                stored = await self._await_turn(names, token)
                raise_if_cancelled()  # a cancel redis-py lost as a reply came in
            except asyncio.CancelledError:
                if time.monotonic() >= self._down_until:  # a claim may have landed: release it
                    self._finish_soon(names, token, "")
                raise
            if isinstance(stored, bytes):
                self.followed += 1
                payload = json.loads(stored[1:])
                meta.update(payload["meta"], **{REMOTE: True})
                for event in payload["events"]:
                    yield codec.decode(base64.b64decode(event))
                return
            if stored is None:
                self.alone += 1
                async for event in lead(meta):
                    yield event
                return
            if stored == "took_over":
                self.took_over += 1
            else:
                self.led += 1
            async for event in self._lead(names, token, lead, meta, codec, reusable):
                yield event

        return produce

    # -- follower --------------------------------------------------------------------------
    async def _await_turn(
        self, names: tuple[str, str, str], token: str
    ) -> bytes | Literal["led", "took_over"] | None:
        """The leader's answer (bytes); 'led' or 'took_over' (after waiting on another
        leader) when this replica now holds the lease; None when Redis cannot help (lead
        without a lease)."""
        if time.monotonic() < self._down_until:
            return None
        lease, answer, channel = names
        pubsub = self._r.pubsub()
        deadline = time.monotonic() + self.config.max_wait_s
        try:
            async with asyncio.timeout(self.config.redis_timeout_s):
                await pubsub.subscribe(channel)  # before looking: no announcement is missed
            waited = False
            while True:
                async with asyncio.timeout(self.config.redis_timeout_s):
                    reply = await self._claim(
                        keys=[lease, answer], args=[token, self.config.lease_ms, int(waited)]
                    )
                kind = _text(reply[0])
                if kind == "answer":
                    return bytes(reply[1])
                if kind == "lead":
                    return "took_over" if waited else "led"
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning(
                        "waited %.0f s on a flight: calling an engine", self.config.max_wait_s
                    )
                    return None
                pttl = int(reply[1])
                wait_s = min(left, (pttl if pttl > 0 else 50) / 1000 + 0.01)
                waited = True
                await _next_message(pubsub, wait_s)
        except _REDIS_ERRORS as exc:
            self._failed(exc)
            return None
        finally:
            await _close(pubsub)

    # -- leader ----------------------------------------------------------------------------
    async def _lead(
        self,
        names: tuple[str, str, str],
        token: str,
        lead: Producer[T],
        meta: dict[str, Any],
        codec: Codec[T],
        reusable: Callable[[list[T]], bool],
    ) -> AsyncIterator[T]:
        renewer = asyncio.create_task(self._keep_lease(names[0], token))
        events: list[T] = []
        payload = ""
        try:
            async for event in lead(meta):
                events.append(event)
                yield event
            payload = _payload(events, meta, codec, reusable)
        finally:
            renewer.cancel()
            self._finish_soon(names, token, payload)

    def _finish_soon(self, names: tuple[str, str, str], token: str, payload: str) -> None:
        """Stores the answer ('' = none), drops the lease and wakes the followers, in a task of
        its own: the caller may be closing because its task was cancelled."""
        lease, answer, channel = names
        args = [token, payload, int(self.config.answer_ttl_s * 1000), channel]
        task = asyncio.create_task(self._quietly(self._finish, [lease, answer], args))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def drain(self) -> None:
        """Waits for the answers and releases still being written (at shutdown, before the
        Redis client closes): a cancelled flight's lease is dropped at once, not left for the
        other replicas' followers to wait out."""
        if self._finishing:
            await asyncio.wait(self._finishing, timeout=self.config.redis_timeout_s)

    async def _keep_lease(self, lease: str, token: str) -> None:
        every = self.config.lease_ms / 3000
        while True:
            await asyncio.sleep(every)
            try:
                async with asyncio.timeout(self.config.redis_timeout_s):
                    if not await self._renew(keys=[lease], args=[token, self.config.lease_ms]):
                        log.warning("lost the lease of flight %s: another replica may lead", lease)
                        return
            except _REDIS_ERRORS as exc:
                self._failed(exc)

    async def _quietly(self, script: Any, keys: list[str], args: list[Any]) -> None:
        try:
            async with asyncio.timeout(self.config.redis_timeout_s):
                await script(keys=keys, args=args)
        except _REDIS_ERRORS as exc:
            self._failed(exc)

    # -- helpers ---------------------------------------------------------------------------
    def _names(self, key: str) -> tuple[str, str, str]:
        base = f"{self._prefix}:flight:{{{key}}}"  # one hash tag: one cluster slot
        return f"{base}:lease", f"{base}:answer", f"{base}:done"

    def _failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._down_until = now + self.config.retry_s
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "Redis unavailable for shared flights (%r): identical misses coalesce per "
                "replica only for %.0f s",
                exc,
                self.config.retry_s,
            )

    def stats(self) -> dict[str, int]:
        return {
            "led": self.led,
            "took_over": self.took_over,
            "followed": self.followed,
            "alone": self.alone,
        }


class SharedFlightsCollector(Collector):
    """Exports a SharedFlights' counts at scrape time (register it on the app's registry)."""

    def __init__(self, flights: SharedFlights) -> None:
        self._flights = flights

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "gateway_shared_flights",
            "Cacheable misses coordinated with the other replicas through Redis, each counted "
            "once by role: led (took the lease and called the engine), took_over (took it "
            "after waiting on a leader that died, failed or left), followed (replayed another "
            "replica's answer), alone (called the engine without a lease: Redis trouble, or "
            "waited past max_wait_s). Engine calls = led + took_over + alone.",
            labels=["role"],
        )
        for role, count in self._flights.stats().items():
            family.add_metric([role], count)
        yield family


async def _next_message(pubsub: Any, wait_s: float) -> None:
    """Returns on a message on the channel or after ``wait_s``."""
    end = time.monotonic() + wait_s
    while (left := end - time.monotonic()) > 0:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
        if message is not None:
            return


async def _close(pubsub: Any) -> None:
    with contextlib.suppress(*_REDIS_ERRORS):
        await pubsub.aclose()


def _payload(
    events: list[T], meta: dict[str, Any], codec: Codec[T], reusable: Callable[[list[T]], bool]
) -> str:
    """The stored answer: 'R' (late joiners may take it) or 'O' (only waiting followers), then
    JSON. '' when it cannot be encoded: followers then lead a flight of their own."""
    try:
        mark = "R" if reusable(events) else "O"
        encoded = [base64.b64encode(codec.encode(e)).decode() for e in events]
        return mark + json.dumps({"meta": _plain(meta), "events": encoded})
    except Exception:  # the answer itself went out fine: never fail it here
        log.exception("a flight's answer could not be shared with other replicas")
        return ""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _plain(meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON-friendly part of a flight's meta (e.g. which engine answered)."""
    return {k: v for k, v in meta.items() if isinstance(v, str | int | float | bool)}
