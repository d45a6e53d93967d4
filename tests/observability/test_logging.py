"""Structured logs of a real `python -m gateway serve` process in front of the real engine:
one JSON object per stderr line, the request id given (or made) returned and logged, and no
prompt text unless log_prompts is on."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.observability.helpers import scrape
from tests.support.servers import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CANARY = "Describe the purple walrus named Qzxv-7781"


@contextmanager
def gateway_process(engine: Any, log: Path, **env: str) -> Iterator[str]:
    """``python -m gateway serve`` with stderr to ``log``; yields its URL once it is ready."""
    port = free_port()
    environ = {
        **os.environ,
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "GATEWAY_BACKENDS": json.dumps([{"url": engine.url}]),
        "GATEWAY_LOG_LEVEL": "info",
        "GATEWAY_LOG_JSON": "true",
        "GATEWAY_CACHE__STORE_TIMEOUT_S": "5",
        "HF_HUB_OFFLINE": "1",
        **env,
    }
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"],
            cwd=ROOT,
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                assert process.poll() is None, log.read_text()
                try:
                    if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the gateway never became ready"
                time.sleep(0.2)
            yield url
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def ask(url: str, model: str, request_id: str | None = None) -> httpx.Response:
    headers = {"x-request-id": request_id} if request_id is not None else {}
    body = {
        "model": model,
        "messages": [{"role": "user", "content": CANARY}],
        "max_tokens": 48,
        "temperature": 0,
        "stop": [".", "\n"],  # finishes with "stop" quickly: the answer is stored
    }
    response = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=120)
    assert response.status_code == 200, response.text
    return response


def wait_stored(url: str) -> None:
    """Answers are stored after the response: wait (bounded) for the insert."""
    deadline = time.monotonic() + 15
    while scrape(url).value("gateway_cache_stage_duration_seconds_count", stage="insert") < 1:
        assert time.monotonic() < deadline, "the answer was never stored"
        time.sleep(0.05)


def json_lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def access_line(log: Path, request_id: str) -> dict[str, Any]:
    found = [
        line
        for line in json_lines(log)
        if line.get("logger") == "gateway.access" and line.get("request_id") == request_id
    ]
    assert len(found) == 1, f"no single access line for {request_id}: {log.read_text()[-3000:]}"
    return found[0]


def test_request_ids_are_returned_and_logged_and_prompts_are_not(
    engine: Any, tmp_path: Path
) -> None:
    log = tmp_path / "gateway.log"
    with gateway_process(engine, log) as url:
        given = ask(url, engine.model, "obs-test:42")
        wait_stored(url)
        made = ask(url, engine.model)  # a second, identical request: answered from the cache
        unsafe = ask(url, engine.model, "spaces and <tags> are not echoed")
    assert given.headers["x-request-id"] == "obs-test:42"
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    assert re.fullmatch(r"[0-9a-f]{32}", unsafe.headers["x-request-id"])  # replaced, not echoed

    line = access_line(log, "obs-test:42")
    assert line["level"] == "info"
    assert line["status"] == 200 and line["cache"] == "miss"
    assert line["model"] == engine.model and line["backend"] == engine.url
    assert line["method"] == "POST" and line["path"] == "/v1/chat/completions"
    assert line["ms"] > 0 and line["tenant"] == "default"
    assert "prompt" not in line
    hit = access_line(log, made.headers["x-request-id"])
    assert hit["cache"] == "hit-exact" and hit["similarity"] == 1.0

    text = log.read_text()
    assert "purple walrus" not in text and "Qzxv" not in text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(json_lines(log)) == len(lines)  # every line is one JSON object
    assert not [line for line in json_lines(log) if line.get("logger") == "httpx"]  # no probes


def test_prompts_are_logged_only_when_enabled(engine: Any, tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    with gateway_process(engine, log, GATEWAY_LOG_PROMPTS="true") as url:
        ask(url, engine.model, "obs-prompt-1")
    assert access_line(log, "obs-prompt-1")["prompt"] == CANARY
