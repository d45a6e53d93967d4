"""Debian's HAProxy in front of gateway replicas, the way docs/scale-out.md sets it up.

    with running_haproxy(["127.0.0.1:8001", "127.0.0.1:8002"]) as lb:
        httpx.post(f"{lb.url}/v1/chat/completions", ...)
        lb.backend_stats()  # retries, redispatches, servers up (HAProxy's own CSV stats)

The config is written into a temporary folder; HAProxy runs in the foreground (``-db``) as a
child of the test and is stopped with it.
"""

from __future__ import annotations

import csv
import io
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.servers import free_port

# What a dead replica looks like to HAProxy: its port refuses connections (conn-failure) and
# the requests it was answering end without a response (empty-response). Not response-timeout:
# an engine may take minutes on a long answer, and a replayed slow request doubles its work.
RETRY_ON = "conn-failure empty-response"


def haproxy_binary() -> str:
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    assert Path(binary).exists(), "needs Debian's haproxy (make test installs it)"
    return binary


def haproxy_config(
    servers: Sequence[str], port: int, stats_port: int, retry_on: str | None = RETRY_ON
) -> str:
    """The docs' config for ``servers`` (host:port of each replica); ``retry_on=None`` leaves
    HAProxy's default (connection failures only: a request a replica was answering when it
    died gets a 502)."""
    retry = f"    retry-on {retry_on}\n" if retry_on else ""
    lines = "".join(
        f"    server replica{i} {address} check\n" for i, address in enumerate(servers, 1)
    )
    return f"""global
    maxconn 1024
    log stdout format raw local0

defaults
    mode http
    log global
    option httplog
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    retries 3
    option redispatch 1
    option http-buffer-request
{retry}
frontend stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats

frontend gateway
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /health
    http-check expect status 200
    default-server inter 500ms fall 2 rise 2
{lines}"""


@dataclass
class HAProxy:
    url: str
    stats_url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stats(self) -> list[dict[str, str]]:
        """HAProxy's CSV stats, one row per frontend, server and backend."""
        text = httpx.get(f"{self.stats_url};csv", timeout=10).text.lstrip("# ")
        return list(csv.DictReader(io.StringIO(text)))

    def backend_stats(self) -> dict[str, int]:
        """The replicas backend's retries, redispatches and servers up."""
        rows = self.stats()
        backend = next(r for r in rows if r["pxname"] == "replicas" and r["svname"] == "BACKEND")
        up = sum(r["status"].startswith("UP") for r in rows if r["svname"].startswith("replica"))
        return {
            "retries": int(backend["wretr"] or 0),
            "redispatches": int(backend["wredis"] or 0),
            "servers_up": up,
        }


@contextmanager
def running_haproxy(servers: Sequence[str], retry_on: str | None = RETRY_ON) -> Iterator[HAProxy]:
    """HAProxy in front of ``servers``; ready once every server passed its health check."""
    folder = Path(tempfile.mkdtemp(prefix="haproxy-"))
    port, stats_port = free_port(), free_port()
    config = folder / "haproxy.cfg"
    config.write_text(haproxy_config(servers, port, stats_port, retry_on))
    log = folder / "haproxy.log"
    check = subprocess.run([haproxy_binary(), "-c", "-q", "-f", str(config)], capture_output=True)
    assert check.returncode == 0, check.stderr.decode()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [haproxy_binary(), "-db", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    lb = HAProxy(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{stats_port}/stats", process, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if lb.backend_stats()["servers_up"] == len(servers):
                    break
            except (httpx.HTTPError, StopIteration):
                pass
            assert process.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "HAProxy never saw every replica healthy"
            time.sleep(0.1)
        yield lb
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)
