"""All settings in one pydantic-settings object.

Sources, highest priority first: constructor arguments, environment variables (prefix
``GATEWAY_``, nested fields joined with ``__``, lists and dicts as JSON), the YAML file named by
``GATEWAY_CONFIG_FILE`` (or ``--config``), then the defaults below.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from gateway.auth import AuthConfig
from gateway.cache.config import CacheConfig
from gateway.responses_state import ResponsesConfig
from gateway.routing.config import RoutingConfig

CONFIG_FILE_ENV = "GATEWAY_CONFIG_FILE"


class BackendConfig(BaseModel):
    """One OpenAI-compatible engine (a vLLM server)."""

    url: str
    models: list[str] = Field(
        default_factory=list, description="Served model names; empty = ask the engine's /v1/models."
    )
    weight: float = Field(default=1.0, gt=0)
    max_in_flight: int = Field(default=64, ge=1)

    @field_validator("url")
    @classmethod
    def _strip_slash(cls, url: str) -> str:
        return url.rstrip("/")


class TimeoutConfig(BaseModel):
    connect_s: float = Field(default=5.0, gt=0, description="TCP connect to an engine.")
    first_byte_s: float = Field(
        default=120.0, gt=0, description="Engine response headers (covers queueing and prefill)."
    )
    idle_stream_s: float = Field(default=60.0, gt=0, description="Longest gap between two chunks.")
    probe_s: float = Field(default=2.0, gt=0, description="Health probe of one engine.")


class LimitConfig(BaseModel):
    """Hard limits: a request over any of them gets a 4xx and never reaches an engine."""

    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_messages: int = Field(default=512, ge=1, description="Chat messages per request.")
    max_prompt_chars: int = Field(
        default=400_000, ge=1, description="Characters of text over all messages or prompts."
    )
    max_tokens: int = Field(
        default=32_768,
        ge=1,
        description="Largest max_tokens accepted at all (routing.budget clamps below it).",
    )
    max_warm_bytes: int = Field(default=64 * 1_048_576, ge=1024, description="Admin warm-up.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    backends: list[BackendConfig] = Field(default_factory=list)
    backends_file: Path | None = Field(
        default=None,
        description="Engine list published by `python -m engine pool` (followed live).",
    )
    probe_interval_s: float = Field(default=5.0, gt=0, description="Engine health probe period.")
    dns_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="How often dns://name:port backends are resolved again (engines come and go).",
    )
    dns_nameserver: str | None = Field(
        default=None,
        description="ip[:port] of the DNS server for dns:// backends; None = the system resolver.",
    )
    timeouts: TimeoutConfig = Field(default_factory=TimeoutConfig)
    limits: LimitConfig = Field(default_factory=LimitConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    responses: ResponsesConfig = Field(default_factory=ResponsesConfig)
    price_per_1k_tokens: float = Field(
        default=0.0, ge=0, description="For the cost-saved estimate of cache hits."
    )
    redis_url: str | None = Field(
        default=None, description="Shortcut for cache.redis_url (GATEWAY_REDIS_URL)."
    )
    log_level: str = "info"
    log_json: bool = Field(default=True, description="One JSON object per log line.")
    log_prompts: bool = Field(default=False, description="Put prompt text in access logs.")

    @model_validator(mode="after")
    def _redis_shortcut(self) -> Settings:
        if self.redis_url and not self.cache.redis_url:
            self.cache.redis_url = self.redis_url
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            if not Path(config_file).is_file():
                raise FileNotFoundError(f"{CONFIG_FILE_ENV}={config_file}: no such file")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)
