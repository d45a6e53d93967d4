"""The Responses API's stored responses, kept by the gateway (not by the engines).

OpenAI stores a response by default (``store: true``) so that a follow-up can name it with
``previous_response_id`` and ``GET``/``DELETE /v1/responses/{id}`` can reach it. vLLM keeps no
such state unless started with ``VLLM_ENABLE_RESPONSES_API_STORE=1``, and then only in the
memory of the one engine that made the response, never freed (vLLM warns of the leak), lost
when that engine restarts. So the gateway keeps it: each stored response with the input items
it answered. A follow-up is expanded into a stateless request (that history, the previous
output, then the new input) that any engine can serve, and survives engine restarts.

Kept per tenant (a tenant never reads another's responses). In-process by default, bounded in
count, bytes and age (least recently used first out); in Redis when the gateway has a Redis URL
(each response one key with a TTL; Redis' maxmemory policy bounds the rest), so that every
gateway replica can serve a follow-up of a response another one made.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, Field

from gateway.errors import GatewayError
from gateway.redis_connect import connect, ready

T = TypeVar("T")


class ResponseStoreUnavailable(GatewayError):
    """The shared store of responses did not answer: a follow-up cannot be expanded."""

    status_code = 503
    error_type = "server_error"
    code = "response_store_unavailable"


class ResponsesConfig(BaseModel):
    store_max_entries: int = Field(default=10_000, ge=0, description="0 stores nothing.")
    store_max_bytes: int = Field(default=256 * 1_048_576, ge=0)
    store_ttl_s: float = Field(default=86_400.0, gt=0, description="How long a response is kept.")


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A response object as returned to the client, and the input items it answered (its
    whole conversation so far, instructions excluded: they are not carried to follow-ups)."""

    response: dict[str, Any]
    history: list[Any]

    @property
    def response_id(self) -> str:
        return str(self.response.get("id", ""))


class ResponseStore(Protocol):
    async def put(self, tenant: str, stored: StoredResponse) -> None: ...

    async def get(self, tenant: str, response_id: str) -> StoredResponse | None: ...

    async def delete(self, tenant: str, response_id: str) -> bool: ...

    async def close(self) -> None: ...


class MemoryResponseStore:
    """Stored responses in this process: LRU within a count and a byte budget, with a TTL."""

    def __init__(
        self, config: ResponsesConfig | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._cfg = config or ResponsesConfig()
        self._clock = clock
        self._items: OrderedDict[tuple[str, str], tuple[StoredResponse, int, float]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    async def close(self) -> None:
        self._items.clear()

    async def put(self, tenant: str, stored: StoredResponse) -> None:
        if not stored.response_id:
            return
        size = len(json.dumps([stored.response, stored.history], separators=(",", ":")))
        if size > self._cfg.store_max_bytes:
            return
        key = (tenant, stored.response_id)
        self._remove(key)
        self._items[key] = (stored, size, self._clock() + self._cfg.store_ttl_s)
        self._bytes += size
        while self._items and (
            len(self._items) > self._cfg.store_max_entries
            or self._bytes > self._cfg.store_max_bytes
        ):
            self._remove(next(iter(self._items)))

    async def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        key = (tenant, response_id)
        found = self._items.get(key)
        if found is None:
            return None
        if found[2] <= self._clock():
            self._remove(key)
            return None
        self._items.move_to_end(key)
        return found[0]

    async def delete(self, tenant: str, response_id: str) -> bool:
        return self._remove((tenant, response_id))

    def _remove(self, key: tuple[str, str]) -> bool:
        found = self._items.pop(key, None)
        if found is None:
            return False
        self._bytes -= found[1]
        return True


class RedisResponseStore:
    """Stored responses in Redis: one JSON value per response under
    ``<prefix>:resp:<tenant digest>:<response id>`` with the configured TTL."""

    def __init__(
        self,
        url: str,
        config: ResponsesConfig | None = None,
        *,
        prefix: str = "semcache",
        timeout_s: float = 1.0,
        tls: Mapping[str, Any] | None = None,
    ) -> None:
        self._cfg = config or ResponsesConfig()
        self._r = connect(url, connect_timeout_s=timeout_s, socket_timeout_s=timeout_s, tls=tls)
        self._prefix = prefix
        self._timeout_s = timeout_s

    def _key(self, tenant: str, response_id: str) -> str:
        digest = hashlib.sha256(tenant.encode()).hexdigest()[:16]
        return f"{self._prefix}:resp:{digest}:{response_id}"

    async def _call(self, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await call
        except Exception as exc:  # any client failure: redis-py 8.1's cluster client once
            # raised AttributeError from a connection it broke itself
            raise ResponseStoreUnavailable(f"The store of responses failed: {exc!r}") from exc

    async def put(self, tenant: str, stored: StoredResponse) -> None:
        if not stored.response_id or self._cfg.store_max_entries == 0:
            return
        value = json.dumps({"response": stored.response, "history": stored.history})
        if len(value) > self._cfg.store_max_bytes:
            return
        ttl_ms = max(1, int(self._cfg.store_ttl_s * 1000))
        await self._call(self._r.set(self._key(tenant, stored.response_id), value, px=ttl_ms))

    async def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        raw = await self._call(self._r.get(self._key(tenant, response_id)))
        if raw is None:
            return None
        data = json.loads(raw)
        return StoredResponse(data["response"], data["history"])

    async def delete(self, tenant: str, response_id: str) -> bool:
        return bool(await self._call(self._r.delete(self._key(tenant, response_id))))

    async def ready(self) -> None:
        await ready(self._r)

    async def close(self) -> None:
        await self._r.aclose()


def build_response_store(
    config: ResponsesConfig,
    redis_url: str | None,
    *,
    prefix: str = "semcache",
    tls: Mapping[str, Any] | None = None,
) -> ResponseStore:
    """Redis when the gateway has a Redis URL (shared by replicas), else in-process."""
    if redis_url:
        return RedisResponseStore(redis_url, config, prefix=prefix, tls=tls)
    return MemoryResponseStore(config)
