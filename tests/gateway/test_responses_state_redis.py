"""The store of responses in a real Redis 8: what one gateway replica stored, another serves
(a follow-up of a response made elsewhere, GET), per tenant, with a TTL; a dead Redis is a
clear 503 for a follow-up, never a wrong answer."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import openai
import pytest

from gateway.config import BackendConfig
from gateway.responses_state import (
    RedisResponseStore,
    ResponsesConfig,
    ResponseStoreUnavailable,
    StoredResponse,
)
from tests.support.gateway import running_gateway
from tests.support.servers import free_port


def _stored(response_id: str) -> StoredResponse:
    response = {"id": response_id, "object": "response", "output": [], "status": "completed"}
    return StoredResponse(response, [{"role": "user", "content": "Hi"}])


async def test_put_get_delete_per_tenant_with_a_ttl(redis_server: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    store = RedisResponseStore(redis_server, ResponsesConfig(store_ttl_s=1), prefix=prefix)
    try:
        await store.put("acme", _stored("resp_1"))
        assert await store.get("acme", "resp_1") == _stored("resp_1")
        assert await store.get("other", "resp_1") is None
        assert not await store.delete("other", "resp_1")
        assert await store.delete("acme", "resp_1")
        assert await store.get("acme", "resp_1") is None
        await store.put("acme", _stored("resp_2"))
        await asyncio.sleep(1.2)
        assert await store.get("acme", "resp_2") is None  # expired
    finally:
        await store.close()


async def test_a_dead_redis_is_unavailable_not_missing() -> None:
    store = RedisResponseStore(f"redis://127.0.0.1:{free_port()}", timeout_s=0.3)
    try:
        with pytest.raises(ResponseStoreUnavailable):
            await store.get("acme", "resp_1")
    finally:
        await store.close()


@pytest.mark.e2e
def test_a_follow_up_is_served_by_another_replica(redis_server: str, engine: Any) -> None:
    settings: dict[str, Any] = {
        "backends": [BackendConfig(url=engine.url)],
        "redis_url": redis_server,
        "cache": {"key_prefix": f"t{uuid.uuid4().hex[:8]}"},
    }
    with running_gateway(**settings) as one, running_gateway(**settings) as two:
        first = openai.OpenAI(base_url=f"{one}/v1", api_key="unused", max_retries=0)
        second = openai.OpenAI(base_url=f"{two}/v1", api_key="unused", max_retries=0)
        made = first.responses.create(
            model=engine.model, input="My name is Ada.", max_output_tokens=16, temperature=0
        )
        follow = second.responses.create(
            model=engine.model,
            input="What is my name?",
            previous_response_id=made.id,
            max_output_tokens=16,
        )
        assert follow.previous_response_id == made.id
        assert second.responses.retrieve(made.id).output_text == made.output_text
        items = second.responses.input_items.list(follow.id, order="asc").data
        assert [getattr(item, "role", None) for item in items] == ["user", "assistant", "user"]
