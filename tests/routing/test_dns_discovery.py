"""Engines found by a real DNS server: Debian's dnsmasq answers one name with several loopback
addresses (as a Kubernetes headless Service answers with its pods), and stub engines listen on
127.0.0.2, 127.0.0.3, ... on one port. The gateway adds and drains engines as the answer changes,
and two replicas that learned the engines in different orders send a prefix to the same engine."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import dns.exception
import dns.resolver
import httpx
import pytest
import uvicorn

from gateway.config import BackendConfig
from gateway.routing.backends import BackendPool
from gateway.routing.dns_discovery import (
    DnsEngines,
    DnsTarget,
    NameserverResolver,
    SystemResolver,
)
from tests.support.gateway import running_gateway
from tests.support.servers import free_port, serve_in_thread
from tests.support.stub_engines import MODEL, FaultEngine

NAME = "vllm-headless.test"


class Dnsmasq:
    """dnsmasq on 127.0.0.1:<free port>, answering only from a hosts file that tests rewrite."""

    def __init__(self) -> None:
        binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        assert Path(binary).exists(), "needs Debian's dnsmasq-base (make test installs it)"
        self.dir = Path(tempfile.mkdtemp(prefix="dnsmasq-"))
        self.hosts = self.dir / "hosts"
        self.port = free_port()
        self.set_addresses([])
        self.process = subprocess.Popen(
            [
                binary,
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                f"--port={self.port}",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--local=/test/",  # answers for *.test come only from the hosts file
                "--no-hosts",
                f"--addn-hosts={self.hosts}",
                f"--pid-file={self.dir / 'pid'}",
                "--user=root",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.resolver = NameserverResolver(f"127.0.0.1:{self.port}")
        deadline = time.monotonic() + 10
        while True:  # up when it answers (an empty hosts file: no such name yet)
            try:
                asyncio.run(self.resolver.addresses(NAME))
                break
            except dns.resolver.NXDOMAIN:
                break
            except dns.exception.DNSException as exc:  # not answering yet
                assert self.process.poll() is None, self.process.stderr
                assert time.monotonic() < deadline, f"dnsmasq did not answer: {exc!r}"
                time.sleep(0.05)

    def set_addresses(self, addresses: list[str]) -> None:
        """The name's addresses from now on (dnsmasq re-reads its hosts file on SIGHUP)."""
        self.hosts.write_text("".join(f"{a} {NAME}\n" for a in addresses))
        if getattr(self, "process", None) is not None:
            self.process.send_signal(signal.SIGHUP)
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def dnsmasq() -> Iterator[Dnsmasq]:
    server = Dnsmasq()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def engines_on(addresses: list[str], port: int) -> Iterator[dict[str, FaultEngine]]:
    """A stub engine on each loopback address, all on ``port``."""
    with ExitStack() as stack:
        found = {}
        for address in addresses:
            engine = FaultEngine()
            config = uvicorn.Config(engine.app(), host=address, port=port, log_level="error")
            engine.url = stack.enter_context(serve_in_thread(uvicorn.Server(config)))
            found[engine.url] = engine
        yield found


def urls(addresses: list[str], port: int) -> set[str]:
    return {f"http://{a}:{port}" for a in addresses}


def test_engines_come_and_go_with_the_names_addresses(dnsmasq: Dnsmasq) -> None:
    port = free_port()
    everyone = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    dnsmasq.set_addresses(everyone[:2])

    async def main() -> None:
        async with httpx.AsyncClient() as client:
            pool = BackendPool([], client, probe_interval_s=60)
            config = BackendConfig(url=f"dns://{NAME}:{port}")
            async with DnsEngines(pool, [config], dnsmasq.resolver, interval_s=60) as dns:
                assert {b.url for b in pool.backends} == urls(everyone[:2], port)
                assert all(b.healthy for b in pool.backends)  # probed as they joined
                dnsmasq.set_addresses(everyone)  # kubectl scale deployment vllm --replicas 3
                await dns.refresh()
                assert {b.url for b in pool.backends} == urls(everyone, port)
                dnsmasq.set_addresses(everyone[1:])  # a pod went away
                await dns.refresh()
                assert {b.url for b in pool.backends} == urls(everyone[1:], port)
                dnsmasq.process.send_signal(signal.SIGSTOP)  # the DNS server hangs
                try:
                    await dns.refresh()
                finally:
                    dnsmasq.process.send_signal(signal.SIGCONT)
                assert {b.url for b in pool.backends} == urls(everyone[1:], port)  # kept
                dnsmasq.set_addresses([])  # scaled to zero: the name has no address
                await dns.refresh()
                assert pool.backends == []

    with engines_on(everyone, port):
        asyncio.run(main())


def ask(url: str, text: str) -> httpx.Response:
    body = {
        "model": MODEL,
        "messages": [{"role": "system", "content": text}, {"role": "user", "content": "hi"}],
    }
    reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
    assert reply.status_code == 200, reply.text
    return reply


def test_replicas_send_a_prefix_to_the_same_engine_whatever_order_they_found_them(
    dnsmasq: Dnsmasq,
) -> None:
    port = free_port()
    everyone = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    settings = {
        "backends": [BackendConfig(url=f"dns://{NAME}:{port}", models=[MODEL])],
        "dns_nameserver": f"127.0.0.1:{dnsmasq.port}",
        "dns_interval_s": 0.2,
        "cache": {"enabled": False},
    }
    prompts = [f"You are assistant {i} {uuid.uuid4().hex}" for i in range(24)]
    with engines_on(everyone, port) as engines:
        dnsmasq.set_addresses(everyone[2:])  # replica A starts with one engine...
        with running_gateway(**settings) as a:
            dnsmasq.set_addresses(everyone)  # ...and finds the other two later, in its order
            deadline = time.monotonic() + 10
            while len({ask(a, p).headers["x-gateway-backend"] for p in prompts}) < 3:
                assert time.monotonic() < deadline, "replica A never used the new engines"
                time.sleep(0.2)
            with running_gateway(**settings) as b:  # replica B finds all three at once
                on_a = [ask(a, p).headers["x-gateway-backend"] for p in prompts]
                on_b = [ask(b, p).headers["x-gateway-backend"] for p in prompts]
    assert on_a == on_b
    assert set(on_a) == set(engines)  # the prefixes spread over every engine
    assert DnsTarget.parse(f"dns://{NAME}:{port}").engine_url("::1") == f"http://[::1]:{port}"


def test_the_system_resolver_reads_what_any_program_reads() -> None:
    # getaddrinfo: /etc/hosts first, as in a pod (the default when no nameserver is set)
    found = asyncio.run(SystemResolver().addresses("localhost"))
    assert "127.0.0.1" in found or "::1" in found
    with pytest.raises(OSError):
        asyncio.run(SystemResolver().addresses(f"no-such-host-{uuid.uuid4().hex}.invalid"))
