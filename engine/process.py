"""EngineProcess: one engine server (vLLM or llama.cpp) as a child process group, started,
awaited, stopped.

The server runs in its own session (process group), so stopping it reaches vLLM's own
children (EngineCore, its worker) too: SIGTERM to the group, SIGKILL after a grace period,
then it waits until no live process of the group is left. By default a small guard
(engine/guard.py) leads the group and takes the group down when the thread that started
it dies, so a test run or CLI killed with SIGKILL leaves no engine behind; start engines
from a long-lived thread (the event loop's, or the main thread).

Usable as ``async with`` (gateway, pool, CLI) or plain ``with`` (pytest fixtures).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from engine.kinds import ServerSpec

GUARD_SCRIPT = Path(__file__).with_name("guard.py")


class EngineStartError(RuntimeError):
    """The engine exited or did not become ready; carries the tail of its log."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        full = f"{message}\n--- engine log (tail) ---\n{log_tail}" if log_tail else message
        super().__init__(full)
        self.log_tail = log_tail


class EngineProcess:
    """Start ``spec`` as an engine server, logging to ``log_path``; stop it on exit."""

    def __init__(
        self,
        spec: ServerSpec,
        log_path: Path,
        *,
        startup_timeout: float = 300.0,
        stop_grace: float = 20.0,
        poll_interval: float = 0.5,
        python: str = sys.executable,
        die_with_parent: bool = True,
    ) -> None:
        self.spec = spec
        self.log_path = Path(log_path)
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.poll_interval = poll_interval
        self.python = python
        self.die_with_parent = die_with_parent and sys.platform == "linux"
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._started_at = 0.0

    # -- identity -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.spec.url

    @property
    def model(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- start --------------------------------------------------------------------------
    def launch(self) -> None:
        """Start the process (does not wait for readiness)."""
        if self._proc is not None:
            raise RuntimeError("engine already launched")
        argv = self.spec.argv(self.python)
        if self.die_with_parent:
            grace = str(self.stop_grace)
            argv = [sys.executable, str(GUARD_SCRIPT), str(os.getpid()), grace, *argv]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._log.write(f"# engine command: {shlex.join(self.spec.argv(self.python))}\n".encode())
        self._log.flush()
        self._started_at = time.monotonic()
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.spec.env()},
            start_new_session=True,
        )

    def wait_ready_sync(self) -> None:
        """Block until /health and /v1/models answer; raise EngineStartError otherwise."""
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            while not self._ready(_probe_sync(client, self.url), deadline):
                time.sleep(self.poll_interval)

    async def wait_ready(self) -> None:
        """Async twin of wait_ready_sync."""
        deadline = time.monotonic() + self.startup_timeout
        async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
            while not self._ready(await _probe_async(client, self.url), deadline):
                await asyncio.sleep(self.poll_interval)

    def _ready(self, models: list[str], deadline: float) -> bool:
        """True once the served name is listed; raises if the process died or time ran out."""
        if self.model in models:
            self.startup_seconds = time.monotonic() - self._started_at
            return True
        code = self.returncode
        if code is not None:
            raise EngineStartError(
                f"engine exited with code {code} before it was ready ({self.log_path})",
                self.log_tail(),
            )
        if time.monotonic() > deadline:
            raise EngineStartError(
                f"engine not ready after {self.startup_timeout:.0f} s ({self.log_path})",
                self.log_tail(),
            )
        return False

    def start_sync(self) -> None:
        self.launch()
        try:
            self.wait_ready_sync()
        except BaseException:
            self.stop()
            raise

    async def start(self) -> None:
        self.launch()
        try:
            await self.wait_ready()
        except BaseException:
            await self.astop()  # shielded: finishes even when start() is cancelled
            raise

    # -- stop ---------------------------------------------------------------------------
    def stop(self) -> int | None:
        """SIGTERM the group, SIGKILL what is left after the grace period; idempotent.

        Returns the server's exit code (None if it was never launched)."""
        proc = self._proc
        if proc is None:
            return None
        pgid = proc.pid  # start_new_session: the leader's pid is the group id
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        _wait_group(proc, pgid, deadline)
        if group_members(pgid):
            _signal_group(pgid, signal.SIGKILL)
            _wait_group(proc, pgid, time.monotonic() + 10.0)
        if self._log is not None:
            self._log.close()
            self._log = None
        return proc.poll()

    async def astop(self) -> int | None:
        """stop() in a thread, shielded so a cancellation does not leave the group alive."""
        return await asyncio.shield(asyncio.to_thread(self.stop))

    async def wait_exit(self) -> int:
        """Wait until the server exits by itself; returns its exit code."""
        while True:
            code = self.returncode
            if code is not None:
                return code
            await asyncio.sleep(self.poll_interval)

    # -- logs and context managers ------------------------------------------------------
    def log_tail(self, lines: int = 60) -> str:
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - 64 * 1024))
                data = handle.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(data.splitlines()[-lines:])

    async def __aenter__(self) -> EngineProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.astop()

    def __enter__(self) -> EngineProcess:
        self.start_sync()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _model_ids(response: httpx.Response) -> list[str]:
    try:
        data = response.json().get("data", [])
    except (ValueError, AttributeError):
        return []
    return [str(item.get("id")) for item in data if isinstance(item, dict)]


def _probe_sync(client: httpx.Client, url: str) -> list[str]:
    """Served model ids once /health is 200, else []."""
    try:
        if client.get(f"{url}/health").status_code != 200:
            return []
        models = client.get(f"{url}/v1/models")
    except httpx.HTTPError:
        return []
    return _model_ids(models) if models.status_code == 200 else []


async def _probe_async(client: httpx.AsyncClient, url: str) -> list[str]:
    try:
        if (await client.get(f"{url}/health")).status_code != 200:
            return []
        models = await client.get(f"{url}/v1/models")
    except httpx.HTTPError:
        return []
    return _model_ids(models) if models.status_code == 200 else []


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_group(proc: subprocess.Popen[bytes], pgid: int, deadline: float) -> None:
    """Reap the leader and wait until the group has no live member, or the deadline."""
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)


def group_members(pgid: int) -> list[int]:
    """Pids of live (non-zombie) processes in process group ``pgid``."""
    proc_root = Path("/proc")
    if not proc_root.is_dir():  # not Linux: ask the kernel whether the group still exists
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name (which may contain spaces): state ppid pgrp ...
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 3 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members
