"""A stand-in engine for fuzzing that answers every request, whatever its body: the gateway's
handling of odd input is under test, not the engine's. Counts what reached it."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.servers import free_port, serve_in_thread

MODEL = "fuzz-model"


@dataclass
class AnyEngine:
    url: str = ""
    calls: int = 0

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/health", lambda _: Response()),
                Route("/v1/models", self._models),
                Route("/tokenize", self._tokenize, methods=["POST"]),
                Route("/v1/chat/completions", self._generate, methods=["POST"]),
                Route("/v1/completions", self._generate, methods=["POST"]),
            ]
        )

    async def _models(self, _: Request) -> JSONResponse:
        card = {"id": MODEL, "object": "model", "max_model_len": 4096}
        return JSONResponse({"object": "list", "data": [card]})

    async def _tokenize(self, request: Request) -> JSONResponse:
        size = len(await request.body())
        return JSONResponse({"count": size // 4, "max_model_len": 4096, "tokens": []})

    async def _generate(self, request: Request) -> Response:
        self.calls += 1
        body = json.loads(await request.body())
        chat = request.url.path.endswith("/chat/completions")
        if body.get("stream") is True:
            return StreamingResponse(self._stream(chat), media_type="text/event-stream")
        choice = (
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ok."},
                "finish_reason": "stop",
            }
            if chat
            else {"index": 0, "text": "ok.", "finish_reason": "stop"}
        )
        usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
        return JSONResponse(
            {
                "id": "x",
                "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()),
                "model": MODEL,
                "choices": [choice],
                "usage": usage,
            }
        )

    async def _stream(self, chat: bool) -> AsyncIterator[bytes]:
        delta = {"delta": {"content": "ok."}} if chat else {"text": "ok."}
        chunk = {
            "id": "x",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": MODEL,
            "choices": [{"index": 0, **delta, "finish_reason": "stop"}],
        }
        yield f"data: {json.dumps(chunk)}\n\n".encode()
        yield b"data: [DONE]\n\n"


@contextmanager
def running_any_engine() -> Iterator[AnyEngine]:
    engine = AnyEngine()
    config = uvicorn.Config(engine.app(), host="127.0.0.1", port=free_port(), log_level="error")
    with serve_in_thread(uvicorn.Server(config)) as url:
        engine.url = url
        yield engine
