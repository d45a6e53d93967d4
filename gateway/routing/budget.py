"""The token budget of one request, settled before it reaches an engine.

max_tokens / max_completion_tokens are clamped to the configured budget and to what the
model's context leaves after the prompt (set to that when absent); a prompt that leaves no room
for a single completion token is rejected with 400 (``context_length_exceeded``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.errors import InvalidRequest
from gateway.routing.backends import BackendPool
from gateway.routing.config import BudgetConfig, ModelBudget
from gateway.routing.tokens import EngineTokenizer, LocalTokenizer, PromptCount, TokenCounter

log = logging.getLogger(__name__)

LIMIT_FIELDS = ("max_tokens", "max_completion_tokens")


@dataclass(frozen=True)
class Budgeted:
    body: dict[str, Any]  # the body to send (a copy when something changed)
    prompt_tokens: int | None  # None: the prompt could not be counted
    max_tokens: int  # the completion budget the engine gets
    context_len: int | None
    clamped: bool  # the client asked for more than it gets

    @property
    def estimated_tokens(self) -> int:
        """Upper bound of the request's total tokens (for per-key token limits)."""
        return (self.prompt_tokens or 0) + self.max_tokens


class TokenBudget:
    def __init__(self, config: BudgetConfig, pool: BackendPool, client: httpx.AsyncClient) -> None:
        self._cfg = config
        self._pool = pool
        self._local: dict[str, LocalTokenizer] = {}
        self._engine = EngineTokenizer(
            client,
            lambda model: [b.url for b in pool.candidates(model) or pool.serving(model)],
            config.tokenize_timeout_s,
        )

    def _model(self, model: str) -> ModelBudget:
        return self._cfg.models.get(model) or ModelBudget()

    def counter(self, model: str) -> TokenCounter:
        """The local tokenizer configured for the model, else the engine's /tokenize."""
        folder = self._model(model).tokenizer or self._cfg.default_tokenizer
        if folder is None:
            return self._engine
        if folder not in self._local:
            self._local[folder] = LocalTokenizer(folder, self._cfg.inline_chars)
        return self._local[folder]

    async def warm_up(self, models: list[str]) -> None:
        """Loads the local tokenizers now (e.g. at startup) instead of on the first request."""
        for model in models:
            counter = self.counter(model)
            if isinstance(counter, LocalTokenizer):
                await counter.load()

    async def apply(
        self,
        path: str,
        body: dict[str, Any],
        model: str,
        *,
        counted: dict[str, Any] | None = None,
        limit_fields: tuple[str, ...] = LIMIT_FIELDS,
    ) -> Budgeted:
        """Checks and clamps; raises InvalidRequest when the prompt cannot fit.

        ``counted``: the body the prompt is counted from, when it is not ``body`` itself (a
        Responses request is counted as the chat messages it renders to); ``limit_fields``:
        the body's fields that bound the completion (Responses: ``max_output_tokens``)."""
        settings = self._model(model)
        budget = min(self._cfg.max_tokens, settings.max_tokens or math.inf)
        count_from = body if counted is None else counted
        prompt_count: PromptCount | None = None
        if self._cfg.enabled:
            try:
                prompt_count = await self.counter(model).count(model, count_from)
            except (LookupError, OSError, ValueError, TypeError) as exc:
                log.warning("could not count the prompt tokens for %s: %s", model, exc)
        context = settings.context_len or self._pool.context_len(model)
        if context is None and prompt_count is not None:
            context = prompt_count.context_len
        prompt_tokens = prompt_count.tokens if prompt_count is not None else None
        limit = int(budget)
        if context is not None and prompt_tokens is not None:
            room = context - prompt_tokens
            if room < 1:
                field = next((f for f in ("messages", "prompt") if f in body), "input")
                raise InvalidRequest(
                    f"This model's maximum context length is {context} tokens. However, your "
                    f"{field} resulted in {prompt_tokens} tokens, leaving no room for a "
                    "completion. Please reduce the length of the prompt.",
                    param=field,
                    code="context_length_exceeded",
                )
            limit = min(limit, room)
        present = [f for f in limit_fields if isinstance(body.get(f), int)]
        requested = min((body[f] for f in present), default=None)
        clamped = requested is not None and requested > limit
        granted = limit if requested is None else min(requested, limit)
        if requested is None or clamped:
            default = "max_completion_tokens" if "messages" in body else "max_tokens"
            fields = present or [default if limit_fields == LIMIT_FIELDS else limit_fields[0]]
            body = {**body, **dict.fromkeys(fields, granted)}
        return Budgeted(body, prompt_tokens, granted, context, clamped)
