"""The gateway's errors: one small hierarchy, each knowing its OpenAI error shape and status."""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """Base class. Rendered as ``{"error": {"message", "type", "param", "code"}}``."""

    status_code = 500
    error_type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.param, self.code)

    def headers(self) -> dict[str, str]:
        return {}


def error_body(
    message: str, error_type: str, param: str | None = None, code: str | int | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": _code(code)}}


def _code(code: Any) -> Any:
    """OpenAI's schema has ``code`` as a string or null; engines (vLLM) and HTTP errors put the
    status there as a number: written as a string, so it still says the same."""
    return str(code) if isinstance(code, int) and not isinstance(code, bool) else code


class InvalidRequest(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationFailed(GatewayError):
    status_code = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status_code = 403
    error_type = "invalid_request_error"
    code = "permission_denied"


class NotFound(GatewayError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model '{model}' does not exist or is not served here.", param="model"
        )


class PayloadTooLarge(GatewayError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(GatewayError):
    """Backpressure: the client should come back after ``retry_after_s`` seconds."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, round(self.retry_after_s)))}


class NotCached(GatewayError):
    """Cache-Control: only-if-cached and the cache had no answer (RFC 9111 says 504)."""

    status_code = 504
    error_type = "invalid_request_error"
    code = "not_cached"


class UpstreamError(GatewayError):
    """An engine answered with an error: its status and body are passed on."""

    error_type = "upstream_error"

    def __init__(self, status_code: int, body: Any) -> None:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):  # already OpenAI-shaped
            message = str(error.get("message") or "engine error")
            merged = {**error_body(message, "upstream_error")["error"], **error}
            merged["code"] = _code(merged.get("code"))
            self._body: dict[str, Any] = {"error": merged}
        else:  # older vLLM: {"object": "error", "message": ..., "type": ..., "code": ...}
            fields = body if isinstance(body, dict) else {}
            message = str(fields.get("message") or body or "engine error")
            kind = str(fields.get("type") or "upstream_error")
            self._body = error_body(message, kind, fields.get("param"), fields.get("code"))
        super().__init__(message)
        self.status_code = status_code

    def body(self) -> dict[str, Any]:
        return self._body


class NoBackendAvailable(GatewayError):
    status_code = 503
    error_type = "server_error"
    code = "no_backend_available"


class UpstreamTimeout(NoBackendAvailable):
    code = "upstream_timeout"
