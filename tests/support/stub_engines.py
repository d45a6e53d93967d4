"""A controllable fault-injecting stand-in for a vLLM server, for the routing tests.

Used ONLY to make engines fail, stall, slow down, fill up or die. Its behaviour can be switched
while it runs (``engine.mode = "hang"``), it counts what reached it, and it can run in a
subprocess so that a test can SIGKILL it mid-load like a crashed engine.

    with running_fault_engine(delay_s=0.05) as engine: ...          # in a thread
    with fault_engine_process(delay_s=0.05) as proc: proc.kill()    # in a subprocess
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.servers import free_port, serve_in_thread

FaultMode = Literal["ok", "fail", "error", "reject", "hang", "cut", "stall"]
MODEL = "stub-model"


@dataclass
class FaultEngine:
    """ok: answer after ``delay_s``; fail: 503; error: 500; reject: 400; hang: accept and never
    answer; cut: stream dies after two chunks; stall: stream sends one chunk then goes silent."""

    mode: FaultMode = "ok"
    delay_s: float = 0.0
    chunk_delay_s: float = 0.01
    words: list[str] = field(default_factory=lambda: ["Hello", " from", " the", " stub", "."])
    model: str = MODEL
    max_model_len: int | None = 2048
    metrics_text: str | None = None  # served at /metrics when set
    healthy: bool = True
    url: str = ""
    calls: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    hints: list[str] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    disconnects: int = 0  # requests whose client hung up before the answer was complete
    completed: int = 0  # answers generated to their end (JSON returned, stream finished)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/health", self._health),
                Route("/v1/models", self._models),
                Route("/metrics", self._metrics),
                Route("/stats", self._stats),
                Route("/tokenize", self._tokenize, methods=["POST"]),
                Route("/v1/chat/completions", self._generate, methods=["POST"]),
                Route("/v1/completions", self._generate, methods=["POST"]),
                Route("/v1/responses", self._generate, methods=["POST"]),
            ]
        )

    async def _health(self, _: Request) -> Response:
        return Response(status_code=200 if self.healthy else 503)

    async def _models(self, _: Request) -> JSONResponse:
        card: dict[str, Any] = {"id": self.model, "object": "model"}
        if self.max_model_len:
            card["max_model_len"] = self.max_model_len
        return JSONResponse({"object": "list", "data": [card]})

    async def _metrics(self, _: Request) -> Response:
        if self.metrics_text is None:
            return Response(status_code=404)
        return PlainTextResponse(self.metrics_text)

    async def _stats(self, _: Request) -> JSONResponse:
        return JSONResponse({"calls": self.calls, "peak_in_flight": self.peak_in_flight})

    async def _tokenize(self, request: Request) -> JSONResponse:
        """Counts whitespace-separated words: enough to test the gateway's fallback path."""
        body = await request.json()
        text = body.get("prompt") or " ".join(str(m.get("content")) for m in body["messages"])
        return JSONResponse(
            {"count": len(text.split()), "max_model_len": self.max_model_len, "tokens": []}
        )

    async def _generate(self, request: Request) -> Response:
        self.calls += 1
        self.hints.append(request.headers.get("x-gateway-route", ""))
        try:
            body = await request.json()
        except ClientDisconnect:  # hung up while sending the body
            self.disconnects += 1
            return Response(status_code=499)
        self.bodies.append(body)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await self._answer(request, body)
        finally:
            if not body.get("stream"):
                self.in_flight -= 1

    async def _answer(self, request: Request, body: dict[str, Any]) -> Response:
        mode = self.mode
        if mode == "fail":
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        if mode == "error":
            return JSONResponse({"error": {"message": "engine bug"}}, status_code=500)
        if mode == "reject":
            return JSONResponse(
                {"object": "error", "message": "bad max_tokens", "type": "BadRequestError"},
                status_code=400,
            )
        if mode == "hang":
            await asyncio.sleep(3600)
        if self.delay_s and await self._hung_up_within(request, self.delay_s):
            if body.get("stream"):
                self.in_flight -= 1  # no stream to count it down
            return Response(status_code=499)  # nobody reads it
        chat = request.url.path.endswith("/chat/completions")
        if request.url.path.endswith("/responses"):
            if body.get("stream"):
                events = self._response_stream(mode)
                return StreamingResponse(events, media_type="text/event-stream")
            return JSONResponse(self._response("".join(self.words)))
        if body.get("stream"):
            return StreamingResponse(self._stream(chat, mode), media_type="text/event-stream")
        text = "".join(self.words)
        self.completed += 1
        choice: dict[str, Any] = (
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            if chat
            else {"index": 0, "text": text, "finish_reason": "stop"}
        )
        return JSONResponse(
            {
                "id": "cmpl-stub",
                "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()),
                "model": self.model,
                "choices": [choice],
                "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
            }
        )

    async def _hung_up_within(self, request: Request, seconds: float) -> bool:
        """Waits ``seconds``, or less when the client hangs up meanwhile (then counted)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if await request.is_disconnected():
                self.disconnects += 1
                return True
            await asyncio.sleep(min(0.01, left))
        return False

    async def _stream(self, chat: bool, mode: FaultMode) -> AsyncIterator[bytes]:
        complete = False
        try:
            for i, word in enumerate(self.words):
                if mode == "cut" and i == 2:
                    raise ConnectionResetError("stub engine dies mid-stream")
                if mode == "stall" and i == 1:
                    await asyncio.sleep(3600)
                delta = {"delta": {"content": word}} if chat else {"text": word}
                chunk = {
                    "id": "cmpl-stub",
                    "object": "chat.completion.chunk" if chat else "text_completion",
                    "created": int(time.time()),
                    "model": self.model,
                    "choices": [{"index": 0, **delta, "finish_reason": None}],
                }
                yield f"data: {json.dumps(chunk)}\n\n".encode()
                await asyncio.sleep(self.chunk_delay_s)
            yield b"data: [DONE]\n\n"
            complete = True
            self.completed += 1
        finally:
            self.in_flight -= 1
            if not complete and mode == "ok":  # cancelled: the client hung up mid-stream
                self.disconnects += 1

    def _response(self, text: str) -> dict[str, Any]:
        """A Responses API response object, as vLLM writes one."""
        part: dict[str, Any] = {
            "type": "output_text",
            "text": text,
            "annotations": [],
            "logprobs": None,
        }
        message = {"id": "msg_stub", "type": "message", "role": "assistant"}
        return {
            "id": f"resp_stub{self.calls}",
            "object": "response",
            "created_at": int(time.time()),
            "model": self.model,
            "status": "completed",
            "output": [{**message, "status": "completed", "content": [part]}],
            "usage": {"input_tokens": 5, "output_tokens": 5, "total_tokens": 10},
        }

    async def _response_stream(self, mode: FaultMode) -> AsyncIterator[bytes]:
        def event(number: int, kind: str, **fields: Any) -> bytes:
            data = {"type": kind, "sequence_number": number, **fields}
            return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()

        try:
            yield event(0, "response.created", response=self._response(""))
            for i, word in enumerate(self.words):
                if mode == "cut" and i == 2:
                    raise ConnectionResetError("stub engine dies mid-stream")
                if mode == "stall" and i == 1:
                    await asyncio.sleep(3600)
                where = {"item_id": "msg_stub", "output_index": 0, "content_index": 0}
                yield event(i + 1, "response.output_text.delta", delta=word, logprobs=[], **where)
                await asyncio.sleep(self.chunk_delay_s)
            done = self._response("".join(self.words))
            yield event(len(self.words) + 1, "response.completed", response=done)
        finally:
            self.in_flight -= 1


@contextmanager
def running_fault_engine(**options: Any) -> Iterator[FaultEngine]:
    """A FaultEngine served from a thread on a free loopback port."""
    engine = FaultEngine(**options)
    config = uvicorn.Config(
        engine.app(),
        host="127.0.0.1",
        port=free_port(),
        log_level="error",
        timeout_graceful_shutdown=1,
    )
    with serve_in_thread(uvicorn.Server(config)) as url:
        engine.url = url
        yield engine


@dataclass
class EngineProcess:
    url: str
    process: subprocess.Popen[bytes]

    def kill(self) -> None:
        """SIGKILL, like a crashed engine: open connections are reset, nothing is flushed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{self.url}/stats", timeout=5).json()
        return data


@contextmanager
def fault_engine_process(delay_s: float = 0.0, mode: FaultMode = "ok") -> Iterator[EngineProcess]:
    """A FaultEngine in its own process (so it can be killed); waits until it answers."""
    port = free_port()
    cmd = [sys.executable, "-m", "tests.support.stub_engines", "--port", str(port)]
    cmd += ["--delay", str(delay_s), "--mode", mode]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    process = subprocess.Popen(cmd, cwd=root)
    handle = EngineProcess(f"http://127.0.0.1:{port}", process)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{handle.url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("stub engine process did not start")
            time.sleep(0.05)
        yield handle
    finally:
        handle.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description="Fault-injecting stub engine")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--mode", default="ok")
    args = parser.parse_args()
    engine = FaultEngine(mode=args.mode, delay_s=args.delay)
    uvicorn.run(engine.app(), host="127.0.0.1", port=args.port, log_level="error")


if __name__ == "__main__":
    main()
