"""EngineSupervisor: one engine's life, in a loop, until the pool stops.

Launch (EngineProcess: own process group, /health + /v1/models), one warm-up completion,
publish as ready, watch (process exit, /health misses in a row), stop the whole process group
when it dies or hangs, wait an exponential backoff, start again. ``max_restarts`` consecutive
failures end the loop in state FAILED; an engine that stayed ready for ``reset_after_s``
starts its failure count again from zero.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol

import httpx

from engine.kinds import ServerSpec
from engine.pool_config import PoolConfig
from engine.process import EngineProcess, EngineStartError
from engine.registry import EngineRecord, EngineState

log = logging.getLogger("engine.pool")


class WarmupError(RuntimeError):
    """The warm-up request did not get a proper completion."""


class SupervisorHost(Protocol):
    """What a supervisor needs from its pool."""

    config: PoolConfig

    @property
    def stopping(self) -> bool: ...

    def create_process(self, spec: ServerSpec, log_path: Path) -> EngineProcess: ...

    def start_slot(self) -> AbstractAsyncContextManager[None]: ...

    def publish(self) -> None: ...


class EngineSupervisor:
    """Keeps one engine alive: start, warm up, watch, restart with backoff."""

    def __init__(self, pool: SupervisorHost, engine_id: str, spec: ServerSpec) -> None:
        self.pool = pool
        self.spec = spec
        self.proc: EngineProcess | None = None
        host = pool.config.advertise_host or spec.host
        self.record = EngineRecord(
            id=engine_id,
            url=f"http://{host}:{spec.port}",
            models=[spec.name],
            state=EngineState.STARTING,
        )
        self.log_path = pool.config.log_dir / f"{engine_id}.log"

    def _set(self, state: EngineState, **fields: object) -> None:
        self.record = self.record.model_copy(update={"state": state, **fields})
        log.info(
            "engine %s: %s%s",
            self.record.id,
            state.value,
            f" ({fields['last_error']})" if fields.get("last_error") else "",
        )
        self.pool.publish()

    async def run(self) -> None:
        backoff = self.pool.config.backoff
        try:
            while not self.pool.stopping:
                ready_for = await self._one_life()
                if ready_for is not None and ready_for >= backoff.reset_after_s:
                    self.record.failures = 0
                failures = self.record.failures + 1
                if backoff.max_restarts is not None and failures > backoff.max_restarts:
                    self._set(EngineState.FAILED, failures=failures, pid=None)
                    return
                delay = _jittered(backoff.delay(failures), backoff.jitter)
                self._set(
                    EngineState.BACKOFF,
                    failures=failures,
                    pid=None,
                    next_restart_at=time.time() + delay,
                )
                await asyncio.sleep(delay)
                self.record.restarts += 1
        finally:
            await self._stop_process()
            if self.record.state != EngineState.FAILED:
                self._set(EngineState.STOPPED, pid=None, ready_since=None, next_restart_at=None)

    async def _one_life(self) -> float | None:
        """Run the engine once; returns how long it was ready (None: never got ready)."""
        proc = self.pool.create_process(self.spec, self.log_path)
        self.proc = proc
        self._set(EngineState.STARTING, pid=None, ready_since=None, next_restart_at=None)
        async with self.pool.start_slot():
            try:
                await proc.start()
            except (EngineStartError, OSError) as error:
                self.record.last_exit_code = proc.returncode
                self._set(EngineState.UNHEALTHY, last_error=_first_line(error))
                return None
            self.record.pid, self.record.startup_s = proc.pid, proc.startup_seconds
            if self.pool.config.warmup.enabled:
                self._set(EngineState.WARMING)
                try:
                    warmup_s = await self._warm_up()
                except (WarmupError, httpx.HTTPError) as error:
                    self.record.last_exit_code = await proc.astop()
                    self._set(EngineState.UNHEALTHY, last_error=f"warm-up: {error!r}")
                    return None
                self.record.warmup_s = warmup_s
        ready_at = time.monotonic()
        self._set(EngineState.READY, ready_since=time.time(), last_error=None)
        reason = await self._watch(proc)
        ready_for = time.monotonic() - ready_at
        self._set(EngineState.UNHEALTHY, last_error=reason, ready_since=None)
        self.record.last_exit_code = await proc.astop()
        return ready_for

    async def _warm_up(self) -> float:
        """One small completion, so the first user does not pay for cold caches."""
        warmup = self.pool.config.warmup
        body = {
            "model": self.spec.name,
            "prompt": warmup.prompt,
            "max_tokens": warmup.max_tokens,
            "temperature": 0,
        }
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=warmup.timeout_s, trust_env=False) as client:
            response = await client.post(f"{self.spec.url}/v1/completions", json=body)
        if response.status_code != 200:
            raise WarmupError(f"status {response.status_code}: {response.text[:200]}")
        try:
            choices = response.json().get("choices")
        except ValueError:
            choices = None
        if not choices:
            raise WarmupError(f"no choices in {response.text[:200]!r}")
        return time.monotonic() - started

    async def _watch(self, proc: EngineProcess) -> str:
        """Return why the engine stopped being usable: it exited, or /health kept failing."""
        health = self.pool.config.health
        misses = 0
        next_probe = time.monotonic() + health.interval_s
        async with httpx.AsyncClient(timeout=health.timeout_s, trust_env=False) as client:
            while True:
                code = proc.returncode
                if code is not None:
                    return f"exited with code {code}"
                if time.monotonic() >= next_probe:
                    misses = 0 if await _healthy(client, self.spec.url) else misses + 1
                    if misses >= health.failures:
                        return f"/health failed {misses} times in a row"
                    next_probe = time.monotonic() + health.interval_s
                await asyncio.sleep(min(0.2, health.interval_s))

    async def _stop_process(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            await proc.astop()


async def _healthy(client: httpx.AsyncClient, url: str) -> bool:
    try:
        response = await client.get(f"{url}/health")
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def _jittered(delay: float, jitter: float) -> float:
    return max(0.0, delay * (1.0 + random.uniform(-jitter, jitter))) if jitter else delay


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else repr(error)
