"""API keys -> tenants. Keys are stored only as SHA-256 hashes; the admin key is separate.

With no keys configured the gateway is open and every request belongs to tenant ``default``
(the embedded default of ``make run``). With keys configured, a request needs
``Authorization: Bearer <key>``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from pydantic import BaseModel, Field, field_validator

from gateway.errors import AuthenticationFailed, PermissionDenied

DEFAULT_TENANT = "default"


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class ApiKey(BaseModel):
    hash: str = Field(description="sha256:<hex> of the key (python -m gateway keys hash KEY)")
    tenant: str = Field(min_length=1)
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)

    @property
    def key_id(self) -> str:
        """Safe to log and to key rate limits on: the first 12 hex digits of the hash."""
        return self.hash[7:19]

    @field_validator("hash")
    @classmethod
    def _well_formed(cls, value: str) -> str:
        prefix, _, digest = value.partition(":")
        if prefix != "sha256" or len(digest) != 64:
            raise ValueError("expected sha256:<64 hex digits>")
        return value.lower()


class AuthConfig(BaseModel):
    keys: list[ApiKey] = Field(default_factory=list)
    admin_key_hash: str | None = Field(
        default=None, description="sha256:<hex> of the admin key; no admin API without it"
    )


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the tenant (cache isolation) and the key's limits."""

    tenant: str
    key_id: str  # a hash prefix, safe to log and to key rate limits on
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


ANONYMOUS = Caller(tenant=DEFAULT_TENANT, key_id="anonymous")


class Authenticator:
    def __init__(self, config: AuthConfig) -> None:
        self._by_hash = {k.hash: k for k in config.keys}
        self._admin = config.admin_key_hash.lower() if config.admin_key_hash else None

    @property
    def enabled(self) -> bool:
        return bool(self._by_hash)

    def caller(self, authorization: str | None) -> Caller:
        """Raises 401 for a missing or unknown key (when keys are configured)."""
        if not self.enabled:
            return ANONYMOUS
        found = self._by_hash.get(hash_key(_bearer(authorization)))
        if found is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        return Caller(
            tenant=found.tenant,
            key_id=found.key_id,
            requests_per_minute=found.requests_per_minute,
            tokens_per_minute=found.tokens_per_minute,
        )

    def admin(self, authorization: str | None) -> None:
        """Raises 401 without a key, 403 for a key that is not the admin key."""
        key = _bearer(authorization)
        if self._admin is None or not hmac.compare_digest(hash_key(key), self._admin):
            raise PermissionDenied("This route needs the admin key.")


def _bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
        )
    return token.strip()
