"""A fault-injecting stand-in for a vLLM server. Used ONLY where a test must make an engine
fail, stall or die; everything else talks to the real engine."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.servers import free_port, serve_in_thread

Mode = Literal["ok", "fail", "hang", "cut", "reject"]
MODEL = "stub-model"


@dataclass
class StubEngine:
    mode: Mode = "ok"
    words: list[str] = field(default_factory=lambda: ["Hello", " from", " the", " stub", "."])
    calls: int = 0
    url: str = ""

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/health", self._health),
                Route("/v1/models", self._models),
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
            ]
        )

    async def _health(self, _: Request) -> Response:
        return Response(status_code=200)

    async def _models(self, _: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    async def _chat(self, request: Request) -> Response:
        self.calls += 1
        body = await request.json()
        if self.mode == "fail":
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        if self.mode == "reject":
            return JSONResponse(
                {
                    "object": "error",
                    "message": "bad max_tokens",
                    "type": "BadRequestError",
                    "code": 400,
                },
                status_code=400,
            )
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if body.get("stream"):
            return StreamingResponse(self._stream(), media_type="text/event-stream")
        return JSONResponse(
            {
                "id": "chatcmpl-stub",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": MODEL,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(self.words)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
            }
        )

    async def _stream(self) -> AsyncIterator[bytes]:
        for i, word in enumerate(self.words):
            if self.mode == "cut" and i == 2:
                raise ConnectionResetError("stub engine dies mid-stream")
            chunk = {
                "id": "chatcmpl-stub",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": MODEL,
                "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
            }
            yield f"data: {json.dumps(chunk)}\n\n".encode()
            await asyncio.sleep(0.01)
        yield b"data: [DONE]\n\n"


@contextmanager
def running_stub(mode: Mode = "ok") -> Iterator[StubEngine]:
    stub = StubEngine(mode=mode)
    config = uvicorn.Config(
        stub.app(),
        host="127.0.0.1",
        port=free_port(),
        log_level="error",
        timeout_graceful_shutdown=1,
    )
    with serve_in_thread(uvicorn.Server(config)) as url:
        stub.url = url
        yield stub
