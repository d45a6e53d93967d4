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
                Route("/v1/responses", self._respond, methods=["POST"]),
                Route("/v1/messages", self._message, methods=["POST"]),
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

    async def _respond(self, request: Request) -> Response:
        self.calls += 1
        body = json.loads(await request.body())
        message = {
            "id": "msg_x",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "ok.", "annotations": []}],
        }
        response = {
            "id": "resp_x",
            "object": "response",
            "created_at": int(time.time()),
            "model": MODEL,
            "status": "completed",
            "output": [message],
            "usage": {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4},
        }
        if body.get("stream") is not True:
            return JSONResponse(response)

        async def events() -> AsyncIterator[bytes]:
            done = {"type": "response.completed", "response": response, "sequence_number": 0}
            yield f"event: response.completed\ndata: {json.dumps(done)}\n\n".encode()

        return StreamingResponse(events(), media_type="text/event-stream")

    async def _message(self, request: Request) -> Response:
        self.calls += 1
        body = json.loads(await request.body())
        message = {
            "id": "msg_x",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": [{"type": "text", "text": "ok."}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 3, "output_tokens": 1},
        }
        if body.get("stream") is not True:
            return JSONResponse(message)

        async def events() -> AsyncIterator[bytes]:
            start = json.dumps({"type": "message_start", "message": message})
            yield f"event: message_start\ndata: {start}\n\n".encode()
            yield b'event: message_stop\ndata: {"type":"message_stop"}\n\n'

        return StreamingResponse(events(), media_type="text/event-stream")


@contextmanager
def running_any_engine() -> Iterator[AnyEngine]:
    engine = AnyEngine()
    config = uvicorn.Config(engine.app(), host="127.0.0.1", port=free_port(), log_level="error")
    with serve_in_thread(uvicorn.Server(config)) as url:
        engine.url = url
        yield engine
