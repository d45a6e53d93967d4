"""Routing's own errors, refining the gateway's hierarchy (status and shape come from there)."""

from __future__ import annotations

from gateway.errors import NoBackendAvailable, RateLimited


class EnginesUnavailable(NoBackendAvailable):
    """503: no engine serving the model is routable (all down, or their circuits open).
    Carries Retry-After when an open circuit says when it will try again."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(max(1, round(self.retry_after_s)))}


class EnginesSaturated(RateLimited):
    """429: every routable engine is at its max_in_flight."""


class QueueFull(RateLimited):
    """429: the admission queue is full."""


class QueueTimeout(RateLimited):
    """429: the request waited in the admission queue past its deadline."""


class KeyRateLimited(RateLimited):
    """429: the API key used up its requests or tokens per minute."""
