"""Which requests the cache may answer, and the keys that keep answers where they belong.

A cached answer is only ever served to a request with the same **scope**. The scope is a
SHA-256 digest over a canonical JSON document (sorted keys, ``null`` fields dropped, integral
floats written as integers, text Unicode NFC) made of:

- ``tenant``: answers never cross tenants (API keys map to tenants).
- ``namespace``: the request's ``cache.namespace`` (default ``"default"``); lets an operator
  partition and delete groups of entries.
- ``kind``: chat completion, text completion or Responses API response; their prompts (and
  how engines render them) are not interchangeable.
- ``model``: another model gives another answer.
- ``embedder``: the id of the embedding model, when it is not the default one
  (``cache.embedder.model_path``): an index is only ever searched with the model that built it,
  so another model (a fine-tune, say) starts its own entries.
- chat: every message before the last one, in order, with all their fields: the system and
  developer prompts and all earlier turns (user, assistant, tool calls and tool results). The
  same question means something else after another conversation. A text-only content list is
  written as its text parts joined by newlines (what vLLM renders), so both spellings match.
- chat: the last message's fields other than its text (e.g. ``name``).
- every other request field, except the few that do not change the answer (below). This
  includes ``tools``, ``tool_choice``, ``parallel_tool_calls``, ``response_format``,
  ``temperature``, ``top_p``, ``top_k``, ``min_p``, ``max_tokens`` (``max_completion_tokens`` is
  folded into it), ``stop`` (a single string is written as a list of one), ``seed``,
  ``presence_penalty``, ``frequency_penalty``, ``repetition_penalty``, ``logit_bias``,
  ``suffix``, ``reasoning_effort`` and any vendor field. Fields are kept as sent, with no
  defaults filled in: vLLM takes omitted sampling values from the model's generation config,
  so "omitted" and "1.0" may differ. A field this module does not know is in the scope: keying
  too finely costs a miss, keying too coarsely serves a wrong answer.

Fields outside the scope, because they only change transport or bookkeeping: ``stream``,
``stream_options``, ``user``, ``cache`` (the per-request cache options), ``metadata``,
``store``, ``service_tier``, ``safety_identifier``, ``prompt_cache_key``, ``request_id``,
``priority``, ``cache_salt``.

Anthropic Messages requests (kind ``messages``) are keyed like chat, the top-level ``system``
prompt in the context. Responses requests (kind ``responses``) are keyed like chat:
``instructions`` and every input item before the last one are the context, the last input
item must be a text-only user message (or ``input`` a string), and the other fields are params
like chat's. A request that
carries state (``previous_response_id``, ``conversation``) or runs in the background is not
cacheable; ``include`` asking for log probabilities is not either.

The **query text** (what is embedded and compared) is the last user message for chat and
Responses, the prompt for completions. The **exact key** is a digest of the scope and the query
text with surrounding whitespace stripped, line endings normalised and Unicode NFC applied.

Not cacheable (``cache_query`` returns None): more than one choice (``n`` != 1, ``best_of`` > 1,
several prompts), log probabilities (``logprobs``, ``top_logprobs``, ``prompt_logprobs``),
``echo``, token-id prompts, a last chat message that is not from the user or holds anything
but text (images, audio, files), audio output, empty text, and requests with tools or
functions unless tool caching is enabled. Which answers are stored (complete ``stop`` answers
only) is decided in service.py.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gateway import responses_input
from gateway.cache.control import CacheControl

CHAT_TEXT_PARTS = frozenset({"text"})
Kind = Literal["chat", "completion", "responses", "messages"]
SCOPE_VERSION = 1
EXCLUDED_FIELDS = frozenset(
    {
        "stream",
        "stream_options",
        "user",
        "cache",
        "metadata",
        "store",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
        "request_id",
        "priority",
        "cache_salt",
    }
)
_TOOL_FIELDS = ("tools", "functions")
_PROMPT_FIELDS = frozenset({"model", "messages", "prompt", "input", "instructions"})
# Responses fields that make a request depend on state kept elsewhere, or not answer at once.
_STATEFUL_FIELDS = ("previous_response_id", "conversation", "background", "prompt")


@dataclass(frozen=True, slots=True)
class CacheQuery:
    """A cacheable request, reduced to what the cache needs."""

    kind: Kind
    scope: str  # "<namespace>:<hex digest>"
    exact_key: str
    text: str
    model: str
    tenant: str
    namespace: str
    control: CacheControl


def cache_query(
    kind: Kind,
    body: Mapping[str, Any],
    tenant: str,
    control: CacheControl,
    *,
    allow_tools: bool = False,
    embedder: str = "",
) -> CacheQuery | None:
    """The cache view of a request body, or None when the cache must stay out of it.
    ``embedder``: the embedding model's id ("" for the default model)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return None
    if _multi_choice(body) or _wants_logprobs(body) or _truthy(body.get("echo")):
        return None
    if _wants_audio(body):
        return None
    if not allow_tools and any(_truthy(body.get(field)) for field in _TOOL_FIELDS):
        return None
    if kind == "chat":
        split = _split_chat(body)
    elif kind == "completion":
        split = _split_completion(body)
    elif kind == "responses":
        split = _split_responses(body)
    elif kind == "messages":
        split = _split_messages(body)
    else:
        return None
    if split is None:
        return None
    text, context = split
    params = {
        key: value
        for key, value in body.items()
        if key not in EXCLUDED_FIELDS
        and key not in _PROMPT_FIELDS
        and not (kind == "messages" and key == "system")
    }
    if "max_completion_tokens" in params and params.get("max_tokens") is None:
        params["max_tokens"] = params.pop("max_completion_tokens")
    if isinstance(params.get("stop"), str):
        params["stop"] = [params["stop"]]
    scope_doc = {
        "v": SCOPE_VERSION,
        "tenant": tenant,
        "namespace": control.namespace,
        "kind": kind,
        "model": model,
        "context": context,
        "params": params,
    }
    if embedder:
        scope_doc["embedder"] = embedder
    digest = _digest(_canonical_json(scope_doc))
    scope = f"{control.namespace}:{digest}"
    exact_key = _digest(f"{scope}\n{text}")
    return CacheQuery(
        kind=kind,
        scope=scope,
        exact_key=exact_key,
        text=text,
        model=model,
        tenant=tenant,
        namespace=control.namespace,
        control=control,
    )


def normalize_text(text: str) -> str:
    """Query text as keyed: NFC, CRLF -> LF, surrounding whitespace stripped."""
    return unicodedata.normalize("NFC", text).replace("\r\n", "\n").strip()


def _last_user_text(
    messages: Any, text_of: Callable[[Any], str | None]
) -> tuple[str, Mapping[str, Any]] | None:
    """(normalised text, last message) of a list of messages that ends with a text-only user
    message, else None."""
    if not isinstance(messages, list) or not messages:
        return None
    if not all(isinstance(message, Mapping) for message in messages):
        return None
    last = messages[-1]
    if last.get("role") != "user":
        return None
    text = text_of(last.get("content"))
    if text is None or not (text := normalize_text(text)):
        return None
    return text, last


def _split_chat(body: Mapping[str, Any]) -> tuple[str, Any] | None:
    """(query text, scope context) of a chat request, or None if not cacheable."""
    messages: Any = body.get("messages")
    found = _last_user_text(messages, _text_only)
    if found is None:
        return None
    text, last = found
    earlier = [_normalize_message(message) for message in messages[:-1]]
    last_fields = {key: value for key, value in last.items() if key not in ("content", "role")}
    return text, {"earlier": earlier, "last": last_fields}


def _split_responses(body: Mapping[str, Any]) -> tuple[str, Any] | None:
    """(query text, scope context) of a Responses request, or None if not cacheable."""
    if any(_truthy(body.get(field)) for field in _STATEFUL_FIELDS):
        return None
    include = body.get("include")
    if isinstance(include, list) and any("logprobs" in str(entry) for entry in include):
        return None
    items = responses_input.input_items(body)
    if not items:
        return None
    last = items[-1]
    if not responses_input.is_message(last) or last.get("role") != "user":
        return None
    text = responses_input.content_text(last.get("content"))
    if text is None or not (text := normalize_text(text)):
        return None
    instructions = body.get("instructions")
    earlier = [responses_input.normalized_item(item) for item in items[:-1]]
    last_fields = {k: v for k, v in last.items() if k not in ("content", "role", "type")}
    return text, {"instructions": instructions, "earlier": earlier, "last": last_fields}


def _split_messages(body: Mapping[str, Any]) -> tuple[str, Any] | None:
    """(query text, scope context) of an Anthropic Messages request, or None: keyed like chat,
    with the top-level ``system`` prompt in the context."""
    messages: Any = body.get("messages")
    found = _last_user_text(messages, responses_input.content_text)
    if found is None:
        return None
    text, last = found
    system = body.get("system")
    system_text = responses_input.content_text(system) if isinstance(system, list) else None
    earlier = [responses_input.normalized_item(message) for message in messages[:-1]]
    last_fields = {k: v for k, v in last.items() if k not in ("content", "role")}
    context = {"system": system if system_text is None else system_text, "earlier": earlier}
    return text, {**context, "last": last_fields}


def _split_completion(body: Mapping[str, Any]) -> tuple[str, Any] | None:
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            return None  # several prompts, or token ids
        prompt = prompt[0]
    if not isinstance(prompt, str):
        return None
    text = normalize_text(prompt)
    if not text:
        return None
    return text, None


def _text_only(content: Any) -> str | None:
    """The text of a chat message content that holds only text (parts of type "text")."""
    return responses_input.content_text(content, CHAT_TEXT_PARTS)


def _normalize_message(message: Mapping[str, Any]) -> dict[str, Any]:
    normalized = dict(message)
    text = _text_only(message.get("content"))
    if text is not None:
        normalized["content"] = text
    return normalized


def _multi_choice(body: Mapping[str, Any]) -> bool:
    n, best_of = body.get("n"), body.get("best_of")
    return (n is not None and n != 1) or (best_of is not None and best_of != 1)


def _wants_logprobs(body: Mapping[str, Any]) -> bool:
    logprobs = body.get("logprobs")
    if logprobs is not None and logprobs is not False:  # completions: 0 still returns logprobs
        return True
    return body.get("top_logprobs") is not None or body.get("prompt_logprobs") is not None


def _wants_audio(body: Mapping[str, Any]) -> bool:
    modalities = body.get("modalities")
    return _truthy(body.get("audio")) or (isinstance(modalities, list) and "audio" in modalities)


def _truthy(value: Any) -> bool:
    return value is not None and value is not False and value != [] and value != {}


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _canonical(item) for key, item in value.items() if item is not None}
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _canonical_json(value: Any) -> str:
    return json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]
