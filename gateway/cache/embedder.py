"""Async, micro-batched embeddings, computed off the event loop.

Callers ``await embed(text)``. Their texts go to a queue; one batcher task takes everything
queued (up to ``batch_size``, optionally waiting ``max_wait_ms`` for more), makes ONE model call
in a single worker thread and hands each caller its vector. While the model runs, new texts
queue up, so concurrent requests share model calls without any artificial wait. Identical
texts in flight share one computation, and a small LRU memo serves a text seen moments ago
(a miss is looked up, then inserted with the same text) without a model call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

from gateway.background import stop_task
from gateway.cache.config import EmbedderConfig
from gateway.cache.encoders import Embedding, Encoder, load_encoder, model_fingerprint

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Job:
    text: str
    future: asyncio.Future[Embedding]


@dataclass(slots=True)
class EmbedderStats:
    requests: int = 0
    memo_hits: int = 0
    model_calls: int = 0
    texts_embedded: int = 0
    model_seconds: float = 0.0
    largest_batch: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        calls = max(self.model_calls, 1)
        return {
            "requests": self.requests,
            "memo_hits": self.memo_hits,
            "model_calls": self.model_calls,
            "texts_embedded": self.texts_embedded,
            "mean_batch": self.texts_embedded / calls,
            "largest_batch": self.largest_batch,
            "mean_model_ms": 1000 * self.model_seconds / calls,
            "errors": self.errors,
        }


class Embedder:
    """all-MiniLM-L6-v2 embeddings with micro-batching. Use ``async with`` or start()/close()."""

    def __init__(self, config: EmbedderConfig | None = None, *, encoder: Encoder | None = None):
        self.config = config or EmbedderConfig()
        self._encoder = encoder
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._inflight: dict[str, asyncio.Future[Embedding]] = {}
        self._memo: OrderedDict[str, Embedding] = OrderedDict()
        self._model_id: str | None = None
        self.stats = EmbedderStats()

    @property
    def started(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def backend(self) -> str:
        return self._require_encoder().name

    @property
    def dim(self) -> int:
        return self._require_encoder().dim

    @property
    def model_id(self) -> str:
        """ "" for the default model, else a digest of the configured model folder's files: part
        of every cache scope, so entries are only compared with vectors of the same model."""
        if self._model_id is None:
            path = self.config.model_path
            self._model_id = model_fingerprint(path) if path is not None else ""
        return self._model_id

    async def start(self) -> None:
        """Load the model (once per Embedder, in a thread) and start the batcher."""
        if self.started:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder")
        if self._encoder is None:
            loop = asyncio.get_running_loop()
            started = time.perf_counter()
            self._encoder = await loop.run_in_executor(self._executor, load_encoder, self.config)
            log.info(
                "embedder %s loaded in %.1f s", self._encoder.name, time.perf_counter() - started
            )
        # Hashing a model folder's weights takes a moment: not on the event loop.
        await asyncio.get_running_loop().run_in_executor(self._executor, lambda: self.model_id)
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._batcher(), name="embedder-batcher")

    async def close(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
        for future in self._inflight.values():
            if not future.done():
                future.set_exception(RuntimeError("embedder closed"))
        self._inflight.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def __aenter__(self) -> Embedder:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def embed(self, text: str) -> np.ndarray:
        """The unit-length float32 vector of ``text`` (read-only array)."""
        return (await self.embed_query(text)).vector

    async def embed_query(self, text: str) -> Embedding:
        """The vector and whether the text was longer than the model's window."""
        self.stats.requests += 1
        memo = self._memo.get(text)
        if memo is not None:
            self._memo.move_to_end(text)
            self.stats.memo_hits += 1
            return memo
        future = self._inflight.get(text)
        if future is None:
            if self._queue is None or not self.started:
                raise RuntimeError("Embedder is not started (use `async with` or start())")
            future = asyncio.get_running_loop().create_future()
            self._inflight[text] = future
            self._queue.put_nowait(_Job(text, future))
        # shield: one caller giving up must not cancel the work other callers wait for.
        return await asyncio.shield(future)

    async def embed_many(self, texts: Sequence[str]) -> list[Embedding]:
        return list(await asyncio.gather(*(self.embed_query(text) for text in texts)))

    def encode_blocking(self, texts: list[str]) -> list[Embedding]:
        """Direct model call for scripts outside an event loop (loads the model if needed)."""
        if self._encoder is None:
            self._encoder = load_encoder(self.config)
        return self._encoder.encode(texts)

    def _require_encoder(self) -> Encoder:
        if self._encoder is None:
            raise RuntimeError("Embedder is not started")
        return self._encoder

    async def _batcher(self) -> None:
        assert self._queue is not None
        queue, loop = self._queue, asyncio.get_running_loop()
        batch_size, max_wait = self.config.batch_size, self.config.max_wait_ms / 1000
        while True:
            batch = [await queue.get()]
            self._drain(queue, batch, batch_size)
            if max_wait > 0 and len(batch) < batch_size:
                deadline = loop.time() + max_wait
                while len(batch) < batch_size and (left := deadline - loop.time()) > 0:
                    try:
                        batch.append(await asyncio.wait_for(queue.get(), left))
                    except TimeoutError:
                        break
                    self._drain(queue, batch, batch_size)
            await self._run(batch, loop)

    @staticmethod
    def _drain(queue: asyncio.Queue[_Job], batch: list[_Job], batch_size: int) -> None:
        while len(batch) < batch_size and not queue.empty():
            batch.append(queue.get_nowait())

    async def _run(self, batch: list[_Job], loop: asyncio.AbstractEventLoop) -> None:
        encoder = self._require_encoder()
        texts = [job.text for job in batch]
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, encoder.encode, texts)
        except Exception as exc:  # the model failed: every waiter gets the error
            self.stats.errors += 1
            log.exception("embedding a batch of %d failed", len(batch))
            for job in batch:
                self._finish(job, None, exc)
            return
        self.stats.model_calls += 1
        self.stats.texts_embedded += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        self.stats.model_seconds += time.perf_counter() - started
        for job, result in zip(batch, results, strict=True):
            self._finish(job, result, None)

    def _finish(self, job: _Job, result: Embedding | None, error: BaseException | None) -> None:
        if self._inflight.get(job.text) is job.future:
            del self._inflight[job.text]
        if result is not None and self.config.lru_size > 0:
            self._memo[job.text] = result
            self._memo.move_to_end(job.text)
            while len(self._memo) > self.config.lru_size:
                self._memo.popitem(last=False)
        if job.future.done():
            return
        if error is not None:
            job.future.set_exception(error)
        elif result is not None:
            job.future.set_result(result)
