"""The live engine list, as the pool publishes it and the gateway reads it.

One JSON document, rewritten atomically (temporary file in the same folder, fsync,
``os.replace``) on every change, so a reader sees the old list or the new one, never half.
``backends`` holds the engines that are ready to serve, in the shape of the gateway's
``BackendConfig`` (``url``, ``models``; extra keys are ignored there); ``engines`` holds every
engine with its state, for dashboards and debugging. Stdlib + pydantic only, so the gateway
can import it without the engine extras.

    {"version": 1, "generation": 7, "updated_at": 1732329000.1, "pool_pid": 4242,
     "backends": [{"id": "smol-0", "url": "http://127.0.0.1:8001", "models": ["smol"]}],
     "engines": [{"id": "smol-0", "state": "ready", "pid": 4250, "restarts": 0, ...}]}
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field

FORMAT_VERSION = 1


class EngineState(StrEnum):
    STARTING = "starting"  # process launched, waiting for /health and /v1/models
    WARMING = "warming"  # up; the warm-up request is in flight
    READY = "ready"  # published to the gateway
    UNHEALTHY = "unhealthy"  # exited or stopped answering; being stopped
    BACKOFF = "backoff"  # waiting before the next restart
    FAILED = "failed"  # gave up (max_restarts reached)
    STOPPED = "stopped"  # the pool is shutting down


class EngineRecord(BaseModel):
    """One engine as the pool sees it."""

    id: str
    url: str
    models: list[str]
    state: EngineState
    pid: int | None = None
    restarts: int = 0
    failures: int = 0
    last_exit_code: int | None = None
    last_error: str | None = None
    ready_since: float | None = None
    next_restart_at: float | None = None
    startup_s: float | None = None
    warmup_s: float | None = None


class BackendEntry(BaseModel):
    """A ready engine, in the gateway's BackendConfig shape (plus its id)."""

    id: str
    url: str
    models: list[str]


class PublishedPool(BaseModel):
    version: int = FORMAT_VERSION
    generation: int = 0
    updated_at: float = Field(default_factory=time.time)
    pool_pid: int = Field(default_factory=os.getpid)
    backends: list[BackendEntry] = Field(default_factory=list)
    engines: list[EngineRecord] = Field(default_factory=list)

    @classmethod
    def from_records(cls, generation: int, records: list[EngineRecord]) -> PublishedPool:
        ready = [r for r in records if r.state == EngineState.READY]
        return cls(
            generation=generation,
            backends=[BackendEntry(id=r.id, url=r.url, models=r.models) for r in ready],
            engines=records,
        )

    def ready_urls(self) -> list[str]:
        return [backend.url for backend in self.backends]


def write_published(path: Path, pool: PublishedPool) -> None:
    """Replace ``path`` atomically with ``pool`` as JSON (readable by everyone)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(pool.model_dump_json(indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def read_published(path: Path) -> PublishedPool | None:
    """The published list, or None when the file is missing or not (yet) valid."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return None
    try:
        return PublishedPool.model_validate_json(text)
    except ValueError:
        return None


async def watch_published(path: Path, interval_s: float = 1.0) -> AsyncIterator[PublishedPool]:
    """Yield the published list now (if there is one) and after every change.

    Polls the file's (mtime, size, inode) every ``interval_s``; cheap and needs no inotify.
    A change is yielded only when the content's generation or pool changed, so rewrites of
    the same state do not wake the consumer."""
    last_stat: tuple[int, int, int] | None = None
    last_key: tuple[int, int] | None = None
    while True:
        try:
            st = os.stat(path)
            stat_key: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stat_key = None
        if stat_key is not None and stat_key != last_stat:
            last_stat = stat_key
            pool = await asyncio.to_thread(read_published, Path(path))
            if pool is not None and (pool.pool_pid, pool.generation) != last_key:
                last_key = (pool.pool_pid, pool.generation)
                yield pool
        await asyncio.sleep(interval_s)
