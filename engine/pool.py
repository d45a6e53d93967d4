"""EnginePool: run N vLLM servers, keep them alive, publish which ones are ready.

Each engine has a supervisor task that loops: launch (EngineProcess: own process group,
/health + /v1/models), send one warm-up completion, publish it as ready, watch it (process
exit, /health misses), and when it dies or hangs stop its whole process group and start it
again after an exponential backoff. Leaving the ``async with`` block (or a SIGTERM handled
by the CLI) cancels the supervisors; each one stops its process group before it ends, so
nothing outlives the pool.

Every change of state is published three ways: the JSON file ``publish_path`` (atomic
rewrite, see registry.py; the gateway watches it), callbacks given to ``subscribe``, and the
async iterator ``watch()``.

    async with EnginePool(load_pool_config(Path("pool.yaml"))) as pool:
        async for snapshot in pool.watch():
            print(snapshot.ready_urls())
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType

from engine.kinds import ServerSpec
from engine.pool_config import PoolConfig
from engine.process import EngineProcess
from engine.registry import EngineRecord, EngineState, PublishedPool, write_published
from engine.supervisor import EngineSupervisor

log = logging.getLogger("engine.pool")

ProcessFactory = Callable[[ServerSpec, Path], EngineProcess]
Listener = Callable[[PublishedPool], Awaitable[None] | None]


class PoolStartError(RuntimeError):
    """Too few engines became ready (they failed for good, or the wait timed out)."""


class EnginePool:
    """Supervise the engines of ``config`` (or ``engines``: explicit (id, spec) pairs)."""

    def __init__(
        self,
        config: PoolConfig,
        *,
        engines: Sequence[tuple[str, ServerSpec]] | None = None,
        process_factory: ProcessFactory | None = None,
        ready_timeout_s: float | None = None,
    ) -> None:
        self.config = config
        self.ready_timeout_s = ready_timeout_s
        pairs = list(engines) if engines is not None else list(config.engine_specs())
        self._factory = process_factory or self._default_factory
        self._supervisors = [EngineSupervisor(self, engine_id, spec) for engine_id, spec in pairs]
        self._listeners: list[Listener] = []
        self._listener_tasks: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._generation = 0
        self._snapshot = PublishedPool.from_records(0, [s.record for s in self._supervisors])
        self._changed: asyncio.Condition | None = None
        self._slots: asyncio.Semaphore | None = None
        self._stopping = False
        self._closed = False

    # -- public view ----------------------------------------------------------------------
    @property
    def records(self) -> list[EngineRecord]:
        return [s.record.model_copy() for s in self._supervisors]

    def snapshot(self) -> PublishedPool:
        """The last published state."""
        return self._snapshot

    def process(self, engine_id: str) -> EngineProcess | None:
        """The engine's current process (None between lives)."""
        for supervisor in self._supervisors:
            if supervisor.record.id == engine_id:
                return supervisor.proc
        raise KeyError(engine_id)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(snapshot)`` after every change (now, too); returns an unsubscribe."""
        self._listeners.append(listener)
        self._notify(listener, self._snapshot)
        return lambda: self._listeners.remove(listener)

    async def watch(self) -> AsyncIterator[PublishedPool]:
        """Yield the current snapshot, then each newer one; ends when the pool has stopped.

        A slow consumer skips intermediate states and always gets the latest."""
        changed = self._condition()
        seen = -1
        while True:
            async with changed:
                await changed.wait_for(functools.partial(self._newer_than, seen))
                snapshot = self._snapshot
            if snapshot.generation > seen:
                seen = snapshot.generation
                yield snapshot
            elif self._closed:
                return

    def _newer_than(self, generation: int) -> bool:
        return self._generation > generation or self._closed

    async def wait_ready(self, count: int | None = None, timeout: float | None = None) -> None:
        """Wait until ``count`` engines (default: all) are ready at the same time.

        Raises PoolStartError when that has become impossible (engines failed for good) or
        the timeout passed."""
        total = len(self._supervisors)
        need = total if count is None else min(count, total)
        changed = self._condition()

        def settled() -> bool:
            states = [s.record.state for s in self._supervisors]
            failed = states.count(EngineState.FAILED)
            return states.count(EngineState.READY) >= need or total - failed < need

        try:
            async with asyncio.timeout(timeout), changed:
                await changed.wait_for(settled)
        except TimeoutError:
            raise PoolStartError(self._not_ready_message(need, f"after {timeout:.0f} s")) from None
        ready = sum(s.record.state == EngineState.READY for s in self._supervisors)
        if ready < need:
            raise PoolStartError(self._not_ready_message(need, "engines failed for good"))

    # -- life -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the supervisors (returns at once; see wait_ready)."""
        if self._tasks:
            raise RuntimeError("pool already started")
        self._condition()
        if self.config.start_concurrency:
            self._slots = asyncio.Semaphore(self.config.start_concurrency)
        self.publish()
        for supervisor in self._supervisors:
            self._tasks.append(asyncio.create_task(supervisor.run(), name=supervisor.record.id))

    async def stop(self) -> None:
        """Stop every engine (process groups included) and publish an empty list; idempotent."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for task, result in zip(self._tasks, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("supervisor %s ended with %r", task.get_name(), result)
        self._tasks.clear()
        if not self._closed:
            self._closed = True
            self.publish()
        if self._listener_tasks:
            await asyncio.gather(*self._listener_tasks, return_exceptions=True)

    async def __aenter__(self) -> EnginePool:
        await self.start()
        try:
            if self.config.min_ready != 0:
                await self.wait_ready(self.config.min_ready, self.ready_timeout_s)
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.shield(self.stop())

    # -- what supervisors use -------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self._stopping

    def create_process(self, spec: ServerSpec, log_path: Path) -> EngineProcess:
        return self._factory(spec, log_path)

    # -- internals ------------------------------------------------------------------------
    def _default_factory(self, spec: ServerSpec, log_path: Path) -> EngineProcess:
        return EngineProcess(
            spec,
            log_path,
            startup_timeout=self.config.startup_timeout_s,
            stop_grace=self.config.stop_grace_s,
            python=self.config.python or sys.executable,
        )

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    @contextlib.asynccontextmanager
    async def start_slot(self) -> AsyncIterator[None]:
        if self._slots is None:
            yield
            return
        async with self._slots:
            yield

    def publish(self) -> None:
        """Record a change: new snapshot, file, listeners, watchers."""
        self._generation += 1
        self._snapshot = PublishedPool.from_records(
            self._generation, [s.record.model_copy() for s in self._supervisors]
        )
        if self.config.publish_path is not None:
            try:
                write_published(self.config.publish_path, self._snapshot)
            except OSError as error:
                log.error("cannot write %s: %s", self.config.publish_path, error)
        for listener in list(self._listeners):
            self._notify(listener, self._snapshot)
        changed = self._changed
        if changed is not None:
            asyncio.get_running_loop().create_task(_notify_all(changed))

    def _notify(self, listener: Listener, snapshot: PublishedPool) -> None:
        try:
            result = listener(snapshot)
        except Exception:
            log.exception("pool listener failed")
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(_guarded(result))
            self._listener_tasks.add(task)
            task.add_done_callback(self._listener_tasks.discard)

    def _not_ready_message(self, need: int, why: str) -> str:
        states = ", ".join(
            f"{s.record.id}={s.record.state.value}"
            + (f" ({s.record.last_error})" if s.record.last_error else "")
            for s in self._supervisors
        )
        return f"fewer than {need} engines ready ({why}): {states}"


async def _notify_all(changed: asyncio.Condition) -> None:
    async with changed:
        changed.notify_all()


async def _guarded(awaitable: Awaitable[None]) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("pool listener failed")
