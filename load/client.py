"""One OpenAI chat request over aiohttp, timed on the client side (latency and TTFT)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def require_loopback(url: str) -> str:
    """The URL without a trailing slash; refuses anything but a loopback host."""
    host = urlsplit(url).hostname
    if host not in LOOPBACK:
        raise SystemExit(
            f"{url}: only loopback targets are allowed ({', '.join(sorted(LOOPBACK))})"
        )
    return url.rstrip("/")


@dataclass(slots=True)
class Reply:
    """What came back. ``cache`` is the x-cache header ("" straight from an engine)."""

    status: int = 0
    cache: str = ""
    similarity: float | None = None
    text: str = ""
    finish_reason: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    latency_s: float = 0.0
    ttft_s: float | None = None
    error: str | None = None

    @property
    def hit(self) -> bool:
        return self.cache.startswith("hit")

    @property
    def tokens(self) -> int:
        return int(self.usage.get("total_tokens") or 0)


async def post_chat(
    http: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> Reply:
    """POST {url}/v1/chat/completions; never raises (an error lands in Reply.error)."""
    reply = Reply()
    started = time.perf_counter()
    try:
        async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as resp:
            reply.status = resp.status
            reply.cache = resp.headers.get("x-cache", "")
            similarity = resp.headers.get("x-cache-similarity")
            reply.similarity = float(similarity) if similarity else None
            if resp.status != 200:
                reply.error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
            elif body.get("stream"):
                await _read_stream(resp, reply, started)
            else:
                data = await resp.json()
                choice = data["choices"][0]
                reply.text = choice["message"].get("content") or ""
                reply.finish_reason = choice.get("finish_reason")
                reply.usage = data.get("usage") or {}
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
        reply.error = f"{type(exc).__name__}: {exc}"
    reply.latency_s = time.perf_counter() - started
    return reply


async def _read_stream(resp: aiohttp.ClientResponse, reply: Reply, started: float) -> None:
    parts: list[str] = []
    async for raw in resp.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        chunk = json.loads(data)
        if "error" in chunk:
            reply.error = str(chunk["error"])
            break
        if chunk.get("usage"):
            reply.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            content = (choice.get("delta") or {}).get("content")
            if content:
                if reply.ttft_s is None:
                    reply.ttft_s = time.perf_counter() - started
                parts.append(content)
            if choice.get("finish_reason"):
                reply.finish_reason = choice["finish_reason"]
    reply.text = "".join(parts)
