"""The Responses API: ``POST /v1/responses`` and the stored responses
(``GET``/``DELETE /v1/responses/{id}``, ``GET /v1/responses/{id}/input_items``).

A request goes through the one request path of chat completions (completions.complete) with
the Responses wire format: the same cache, scope rules, Cache-Control, headers, routing,
limits and metrics. Conversation state is kept by the gateway (gateway/responses_state.py says
why): a response is stored unless the request said ``store: false``, and a follow-up naming
it in ``previous_response_id`` is expanded into explicit input items (the stored history, the
previous output, the new input) before any engine sees it, so any engine can serve it. Such a
follow-up never touches the cache: it is neither looked up nor stored (``x-cache: bypass``).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from gateway import responses_input
from gateway.api.completions import complete
from gateway.api.deps import Services, services
from gateway.api.openai_routes import unless_client_leaves
from gateway.api.responses_format import ResponsesFormat
from gateway.api.schemas import (
    ResponsesRequest,
    enforce_response_limits,
    openapi_operation,
    read_json,
    stored_response_errors,
    validate_model,
)
from gateway.auth import Caller
from gateway.errors import NotFound
from gateway.responses_state import ResponseStoreUnavailable, StoredResponse

log = logging.getLogger(__name__)
router = APIRouter()


@router.post("/v1/responses", openapi_extra=openapi_operation(ResponsesRequest))
async def create_response(request: Request) -> Response:
    svc = services(request)
    caller = svc.auth.caller(request.headers.get("authorization"))
    body = await read_json(request, svc.settings.limits.max_body_bytes)
    parsed = validate_model(ResponsesRequest, body)
    enforce_response_limits(parsed, svc.settings.limits)
    request.state.model = parsed.model
    return await unless_client_leaves(
        request, respond(svc, body, caller, request.headers.get("cache-control"))
    )


async def respond(
    svc: Services, body: dict[str, Any], caller: Caller, cache_control: str | None
) -> Response:
    previous = body.get("previous_response_id")
    if previous is not None:
        body = await _expand(svc, body, caller.tenant, str(previous))
    history = responses_input.input_items(body) or []
    keep = body.get("store", True) is not False
    pending: list[StoredResponse] = []
    returned = False

    def remember(obj: dict[str, Any]) -> None:
        """Told of each complete response sent (miss or hit, JSON or stream)."""
        obj["previous_response_id"] = previous
        obj["store"] = keep
        if keep and obj.get("status") in ("completed", "incomplete"):
            stored = StoredResponse(dict(obj), history)
            if returned:  # a stream's last event: stored while it goes out
                svc.spawn(_put(svc, caller.tenant, stored))
            else:  # a JSON answer: stored before the client has it (another replica may
                pending.append(stored)  # get the follow-up at once)

    fmt = ResponsesFormat(body, remember)
    response = await complete(svc, fmt, body, caller, cache_control, cacheable=previous is None)
    for stored in pending:
        await _put(svc, caller.tenant, stored)
    returned = True
    return response


async def _put(svc: Services, tenant: str, stored: StoredResponse) -> None:
    """Best effort: the answer goes out even if it cannot be stored (then a follow-up naming
    it is a 404, as for an expired response)."""
    try:
        await svc.responses.put(tenant, stored)
    except ResponseStoreUnavailable as exc:
        log.warning("response %s not stored: %s", stored.response_id, exc)


async def _expand(
    svc: Services, body: dict[str, Any], tenant: str, previous: str
) -> dict[str, Any]:
    """A follow-up as a stateless request: the stored conversation, then the new input.
    Instructions are not carried over (OpenAI does not either)."""
    stored = await svc.responses.get(tenant, previous)
    if stored is None:
        raise NotFound(
            f"Previous response with id '{previous}' not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    prior = stored.history + responses_input.output_as_input(stored.response.get("output"))
    expanded = {k: v for k, v in body.items() if k != "previous_response_id"}
    expanded["input"] = prior + (responses_input.input_items(body) or [])
    return expanded


async def _stored(request: Request, response_id: str) -> tuple[Services, Caller, StoredResponse]:
    svc = services(request)
    caller = svc.auth.caller(request.headers.get("authorization"))
    stored = await svc.responses.get(caller.tenant, response_id)
    if stored is None:
        raise NotFound(
            f"Response with id '{response_id}' not found.",
            param="response_id",
            code="response_not_found",
        )
    return svc, caller, stored


@router.get("/v1/responses/{response_id}", responses=stored_response_errors())
async def get_response(request: Request, response_id: str) -> dict[str, Any]:
    _, _, stored = await _stored(request, response_id)
    return stored.response


@router.delete("/v1/responses/{response_id}", responses=stored_response_errors())
async def delete_response(request: Request, response_id: str) -> dict[str, Any]:
    svc, caller, _ = await _stored(request, response_id)
    await svc.responses.delete(caller.tenant, response_id)
    return {"id": response_id, "object": "response", "deleted": True}


@router.get("/v1/responses/{response_id}/input_items", responses=stored_response_errors())
async def list_input_items(request: Request, response_id: str) -> dict[str, Any]:
    """The input items a stored response answered, newest first (OpenAI's default order)."""
    _, _, stored = await _stored(request, response_id)
    items = [_input_item(item, response_id, i) for i, item in enumerate(stored.history)]
    if request.query_params.get("order", "desc") != "asc":
        items.reverse()
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": False,
    }


def _input_item(item: Any, response_id: str, index: int) -> dict[str, Any]:
    """An input item as OpenAI lists it: with an id, messages with typed content parts."""
    if not isinstance(item, dict):
        item = {"role": "user", "content": str(item)}
    listed = dict(item)
    if responses_input.is_message(item):
        content = item.get("content")
        if isinstance(content, str) and item.get("role") == "assistant":
            part = {"type": "output_text", "text": content, "annotations": [], "logprobs": []}
            listed["content"] = [part]
        elif isinstance(content, str):
            listed["content"] = [{"type": "input_text", "text": content}]
        listed.setdefault("type", "message")
        listed.setdefault("status", "completed")
    digest = hashlib.sha256(f"{response_id}:{index}".encode()).hexdigest()[:32]
    listed.setdefault("id", f"msg_{digest}")
    return listed
