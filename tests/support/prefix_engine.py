"""A stand-in for a vLLM engine's prefix cache, for checking the affinity benchmark end to end
without a model: an LRU of prompt blocks, vLLM's prefix-cache counters on ``/metrics``, and a
first token that comes later the more of the prompt was not cached (the prefill).

Blocks are ``block_chars`` characters of the rendered chat (a stand-in for vLLM's 16-token
blocks); a request hits the leading blocks the cache still holds; its prompt's blocks are then
the most recently used; the least recently used go when the cache is over ``capacity_blocks``.

    python -m tests.support.prefix_engine --port 8401 --capacity-blocks 400
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.servers import free_port, serve_in_thread

MODEL = "smollm2-135m-instruct"


@dataclass
class PrefixCacheEngine:
    capacity_blocks: int = 400
    block_chars: int = 64
    prefill_s_per_kchar: float = 0.002  # time to first token per 1 000 uncached characters
    model: str = MODEL
    url: str = ""
    hits: int = 0  # characters, like vLLM's token counters
    queries: int = 0
    running: int = 0
    blocks: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/health", lambda _: Response(status_code=200)),
                Route("/v1/models", self._models),
                Route("/metrics", self._metrics),
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
            ]
        )

    def lookup(self, prompt: str) -> int:
        """Characters of ``prompt`` served from the cache; the prompt is cached afterwards."""
        running = hashlib.blake2b(digest_size=16)
        chain = []
        for start in range(0, len(prompt) - self.block_chars + 1, self.block_chars):
            running.update(prompt[start : start + self.block_chars].encode())
            chain.append(running.hexdigest())
        cached = 0
        while cached < len(chain) and chain[cached] in self.blocks:
            cached += 1
        for block in chain:
            self.blocks.pop(block, None)
            self.blocks[block] = None
        while len(self.blocks) > self.capacity_blocks:
            self.blocks.popitem(last=False)
        self.hits += cached * self.block_chars
        self.queries += len(prompt)
        return cached * self.block_chars

    async def _models(self, _: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    async def _metrics(self, _: Request) -> PlainTextResponse:
        labels = f'{{model_name="{self.model}"}}'
        return PlainTextResponse(
            f"vllm:num_requests_running{labels} {self.running}\n"
            f"vllm:num_requests_waiting{labels} 0\n"
            f"vllm:prefix_cache_queries_total{labels} {self.queries}\n"
            f"vllm:prefix_cache_hits_total{labels} {self.hits}\n"
        )

    async def _chat(self, request: Request) -> Response:
        body: dict[str, Any] = await request.json()
        prompt = "".join(f"<{m['role']}>{m['content']}" for m in body["messages"])
        uncached = len(prompt) - self.lookup(prompt)
        self.running += 1
        return StreamingResponse(self._stream(uncached), media_type="text/event-stream")

    async def _stream(self, uncached: int) -> AsyncIterator[bytes]:
        try:
            await asyncio.sleep(self.prefill_s_per_kchar * uncached / 1000)
            for word in ("Noted", ", thank", " you", "."):
                chunk = {"choices": [{"index": 0, "delta": {"content": word}}]}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
                await asyncio.sleep(0.002)
            yield b"data: [DONE]\n\n"
        finally:
            self.running -= 1


@contextmanager
def running_prefix_engine(**options: Any) -> Iterator[PrefixCacheEngine]:
    """A PrefixCacheEngine served from a thread on a free loopback port."""
    engine = PrefixCacheEngine(**options)
    config = uvicorn.Config(engine.app(), host="127.0.0.1", port=free_port(), log_level="error")
    with serve_in_thread(uvicorn.Server(config)) as url:
        engine.url = url
        yield engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--capacity-blocks", type=int, default=400)
    parser.add_argument("--block-chars", type=int, default=64)
    args = parser.parse_args()
    engine = PrefixCacheEngine(capacity_blocks=args.capacity_blocks, block_chars=args.block_chars)
    uvicorn.run(engine.app(), host="127.0.0.1", port=args.port, log_level="error")


if __name__ == "__main__":
    main()
