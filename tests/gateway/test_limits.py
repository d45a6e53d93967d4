"""Hard limits: every violation is a clear OpenAI-shaped 4xx and none reaches an engine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.config import BackendConfig
from tests.support.gateway import running_gateway
from tests.support.stub_engines import MODEL, FaultEngine, running_fault_engine

LIMITS = {"max_body_bytes": 4096, "max_messages": 3, "max_prompt_chars": 100, "max_tokens": 50}


@pytest.fixture(scope="module")
def stub() -> Iterator[FaultEngine]:
    with running_fault_engine() as engine:
        yield engine


@pytest.fixture(scope="module")
def gateway_url(stub: FaultEngine) -> Iterator[str]:
    with running_gateway(
        backends=[BackendConfig(url=stub.url)], limits=LIMITS, cache={"enabled": False}
    ) as url:
        yield url


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/v1/chat/completions", {"model": MODEL, "messages": [_user("hi")] * 4}, 400, "messages"),
        ("/v1/chat/completions", {"model": MODEL, "messages": [_user("x" * 101)]}, 400, "messages"),
        (
            "/v1/chat/completions",
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "y" * 101}]}],
            },
            400,
            "messages",
        ),
        ("/v1/completions", {"model": MODEL, "prompt": "z" * 101}, 400, "prompt"),
        ("/v1/completions", {"model": MODEL, "prompt": ["a" * 60, "b" * 60]}, 400, "prompt"),
        (
            "/v1/chat/completions",
            {"model": MODEL, "messages": [_user("hi")], "max_tokens": 51},
            400,
            "max_tokens",
        ),
        ("/v1/chat/completions", {"model": MODEL, "messages": [_user("hi")], "n": 0}, 400, "n"),
        ("/v1/chat/completions", {"model": MODEL, "messages": [_user("x" * 5000)]}, 413, None),
    ],
)
def test_violations_are_4xx_and_never_reach_the_engine(
    gateway_url: str,
    stub: FaultEngine,
    path: str,
    body: dict[str, Any],
    status: int,
    param: str | None,
) -> None:
    before = stub.calls
    r = httpx.post(f"{gateway_url}{path}", json=body)
    assert r.status_code == status
    error = r.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert stub.calls == before


def test_within_limits_reaches_the_engine(gateway_url: str, stub: FaultEngine) -> None:
    before = stub.calls
    r = httpx.post(
        f"{gateway_url}/v1/chat/completions",
        json={"model": MODEL, "messages": [_user("hi")] * 3, "max_tokens": 50},
    )
    assert r.status_code == 200
    assert stub.calls == before + 1


def test_unknown_route_and_method_are_openai_shaped(gateway_url: str) -> None:
    missing = httpx.get(f"{gateway_url}/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["message"]
    wrong = httpx.get(f"{gateway_url}/v1/chat/completions")
    assert wrong.status_code == 405 and wrong.json()["error"]["message"]
