"""Talking to a caching gateway in tests: keys, the admin API, waiting for background inserts."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai

from gateway.auth import hash_key

ADMIN = "admin-secret"
KEYS = {"acme": "key-acme", "globex": "key-globex"}
# A stop at the first full stop or line break makes the tiny model finish with "stop" quickly:
# a finished answer, short and quick to generate.
ASK: dict[str, Any] = {"max_tokens": 48, "temperature": 0, "stop": [".", "\n"]}


def auth_settings() -> dict[str, Any]:
    return {
        "admin_key_hash": hash_key(ADMIN),
        "keys": [{"hash": hash_key(key), "tenant": tenant} for tenant, key in KEYS.items()],
    }


def client_for(url: str, tenant: str = "acme") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEYS[tenant], max_retries=0)


def ask(url: str, model: str, question: str, tenant: str = "acme", **extra: Any) -> Any:
    return client_for(url, tenant).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": question}], **{**ASK, **extra}
    )


def cache_stats(url: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/admin/cache/stats", headers={"authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200
    return dict(r.json())


def warm(url: str, model: str, answers: dict[str, str], tenant: str = "acme") -> None:
    """Stores each question's answer as a chat entry of ``tenant`` through the admin API."""
    entries = [
        {"messages": [{"role": "user", "content": q}], "answer": a} for q, a in answers.items()
    ]
    warmed = httpx.post(
        f"{url}/admin/cache/warm",
        json={"model": model, "entries": entries, "tenant": tenant},
        headers={"authorization": f"Bearer {ADMIN}"},
        timeout=60,
    )
    assert warmed.status_code == 200, warmed.text


def wait_inserts(url: str, at_least: int) -> None:
    """Answers are stored after the response went out: wait (bounded) for the insert."""
    deadline = time.monotonic() + 10
    while cache_stats(url)["inserts"] < at_least:
        assert time.monotonic() < deadline, f"the answer was never stored: {cache_stats(url)}"
        time.sleep(0.05)
