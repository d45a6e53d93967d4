"""``python -m engine serve --kind llama.cpp``: the real llama-server with the bundled GGUF, from
start to SIGTERM, as a user runs it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import pytest

from engine.llama_cpp_build import ensure_llama_server
from engine.models import DEFAULT_MODEL_NAME
from engine.ports import free_port
from engine.process import group_members

pytestmark = pytest.mark.e2e


def test_serve_starts_answers_and_stops_on_sigterm() -> None:
    ensure_llama_server()  # built by `make test` before; found at once then
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "serve", "--kind", "llama.cpp", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        lines: list[str] = []
        while not any(line.startswith("engine ready:") for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, lines
            lines.append(proc.stdout.readline())
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()
        assert DEFAULT_MODEL_NAME in [m["id"] for m in models["data"]]
        reply = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={
                "model": DEFAULT_MODEL_NAME,
                "messages": [{"role": "user", "content": "Say hello."}],
                "max_tokens": 8,
                "temperature": 0,
            },
            timeout=60,
        ).json()
        text = reply["choices"][0]["message"]["content"]
        assert text.strip() and "<|im_" not in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert group_members(proc.pid) == []  # llama-server went with it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
