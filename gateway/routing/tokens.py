"""Counting a request's prompt tokens with the model's own tokenizer.

Two sources: a local Hugging Face tokenizer folder (transformers' AutoTokenizer; chat prompts
are rendered with the model's chat template, exactly as vLLM renders them), or, when no folder
is configured, the engine's ``POST /tokenize`` (vLLM), which also reports ``max_model_len``;
llama.cpp's llama-server tokenizes raw text only, so a chat is rendered by its
``/apply-template`` first and its context comes from ``/props``.
Loading runs in a worker thread; so does encoding, except for short prompts: up to
``inline_chars`` characters (about 0.1-0.5 ms of encoding) are counted on the event loop, where
the hop to a worker thread and back would cost more than the counting (~1 ms per miss on two
busy cores).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptCount:
    tokens: int
    context_len: int | None = None  # what the counter learned about the model, if anything


class TokenCounter(Protocol):
    async def count(self, model: str, body: dict[str, Any]) -> PromptCount: ...


def chat_messages(messages: Iterable[Any]) -> list[dict[str, Any]]:
    """Messages with content-part lists flattened to text, as chat templates expect."""
    flat: list[dict[str, Any]] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, list):
            text = "".join(
                str(p.get("text", ""))
                for p in content
                if isinstance(p, dict) and p.get("type") == "text"
            )
            message = {**message, "content": text}
        elif content is None:
            message = {**message, "content": ""}
        flat.append(message)
    return flat


def prompts(body: dict[str, Any]) -> list[str | list[int]]:
    """A completions request's prompt(s): text, or token ids, one entry per prompt."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, int) for p in prompt):
            return [prompt]
        return [p for p in prompt if isinstance(p, str | list)]
    return []


def prompt_chars(body: dict[str, Any]) -> int:
    """How many characters counting ``body`` encodes, before its chat template's own."""
    messages = body.get("messages")
    if isinstance(messages, list):
        chars = sum(len(str(m.get("content", ""))) for m in chat_messages(messages))
        extra = [body.get("tools"), body.get("chat_template_kwargs")]
        return chars + sum(len(json.dumps(e)) for e in extra if e)
    return sum(len(p) if isinstance(p, str) else 0 for p in prompts(body))


class LocalTokenizer:
    """One model's tokenizer, loaded lazily (in a thread) from a local folder. Prompts of at
    most ``inline_chars`` characters are counted on the event loop, longer ones in a thread."""

    def __init__(self, folder: str | Path, inline_chars: int = 0) -> None:
        self.folder = Path(folder).expanduser()
        self.inline_chars = inline_chars
        self._tokenizer: Any = None
        self._lock = asyncio.Lock()

    async def load(self) -> Any:
        if self._tokenizer is not None:
            return self._tokenizer
        async with self._lock:
            if self._tokenizer is None:
                self._tokenizer = await asyncio.to_thread(self._load)
        return self._tokenizer

    def _load(self) -> Any:
        from transformers import AutoTokenizer  # slow import: only when a tokenizer is needed

        return AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)

    def model_max_length(self) -> int | None:
        value = getattr(self._tokenizer, "model_max_length", None)
        return value if isinstance(value, int) and 0 < value < 10_000_000 else None

    async def count(self, model: str, body: dict[str, Any]) -> PromptCount:
        tokenizer = await self.load()
        if prompt_chars(body) <= self.inline_chars:
            tokens = _count(tokenizer, body)
        else:
            tokens = await asyncio.to_thread(_count, tokenizer, body)
        return PromptCount(tokens, self.model_max_length())


def _count(tokenizer: Any, body: dict[str, Any]) -> int:
    messages = body.get("messages")
    if isinstance(messages, list):
        text = tokenizer.apply_chat_template(
            chat_messages(messages),
            tools=body.get("tools"),
            add_generation_prompt=True,
            tokenize=False,
            **(body.get("chat_template_kwargs") or {}),
        )
        # The template already has the special tokens (vLLM's add_special_tokens=False default).
        return len(tokenizer.encode(text, add_special_tokens=False))
    counts = [len(p) if isinstance(p, list) else len(tokenizer.encode(p)) for p in prompts(body)]
    return max(counts, default=0)


class EngineTokenizer:
    """vLLM's ``POST /tokenize`` on an engine that serves the model."""

    def __init__(self, client: httpx.AsyncClient, urls_for: Any, timeout_s: float = 5.0) -> None:
        """``urls_for(model) -> list[str]``: engines to ask, preferred first."""
        self._client = client
        self._urls_for = urls_for
        self._timeout = timeout_s

    async def count(self, model: str, body: dict[str, Any]) -> PromptCount:
        urls: list[str] = list(self._urls_for(model))
        if not urls:
            raise LookupError(f"no engine serving {model!r} to tokenize with")
        messages = body.get("messages")
        if isinstance(messages, list):
            request: dict[str, Any] = {"model": model, "messages": messages}
            if body.get("tools"):
                request["tools"] = body["tools"]
            return await self._ask(urls, request)
        best = PromptCount(0)
        for prompt in prompts(body):
            if isinstance(prompt, list):
                best = PromptCount(max(best.tokens, len(prompt)), best.context_len)
                continue
            found = await self._ask(urls, {"model": model, "prompt": prompt})
            best = PromptCount(
                max(best.tokens, found.tokens), found.context_len or best.context_len
            )
        return best

    async def _ask(self, urls: list[str], request: dict[str, Any]) -> PromptCount:
        last: Exception | None = None
        for url in urls[:2]:
            try:
                data = await self._post(url, "/tokenize", request)
                if "count" not in data and "tokens" in data:  # llama-server: not vLLM's API
                    return await self._ask_llama_server(url, request)
                context = data.get("max_model_len")
                return PromptCount(
                    int(data["count"]), context if isinstance(context, int) else None
                )
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                last = exc
        raise LookupError(f"engine /tokenize failed: {last}")

    async def _ask_llama_server(self, url: str, request: dict[str, Any]) -> PromptCount:
        """A rendered chat holds its special tokens already; a plain prompt gets BOS added,
        as llama-server does when it answers."""
        if "messages" in request:
            template = {k: v for k, v in request.items() if k in ("messages", "tools")}
            rendered = await self._post(url, "/apply-template", template)
            tokenize = {"content": str(rendered["prompt"]), "add_special": False}
        else:
            tokenize = {"content": request["prompt"], "add_special": True}
        tokens = (await self._post(url, "/tokenize", tokenize))["tokens"]
        props = await self._post(url, "/props", None)
        context = (props.get("default_generation_settings") or {}).get("n_ctx")
        return PromptCount(len(tokens), context if isinstance(context, int) else None)

    async def _post(self, url: str, path: str, request: dict[str, Any] | None) -> dict[str, Any]:
        """One JSON call (a GET when there is nothing to send)."""
        if request is None:
            response = await self._client.get(f"{url}{path}", timeout=self._timeout)
        else:
            response = await self._client.post(f"{url}{path}", json=request, timeout=self._timeout)
        response.raise_for_status()
        data = response.json()
        if not isinstance(data, dict):
            raise ValueError(f"{path} answered {type(data).__name__}, not an object")
        return data
