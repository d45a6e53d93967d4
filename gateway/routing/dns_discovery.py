"""Engines discovered by DNS: a backend ``dns://name:port`` stands for every address of ``name``.

A Kubernetes headless Service answers its name with the address of each ready pod, so scaling
the vLLM Deployment is all it takes: every ``interval_s`` the name is resolved again, engines at
new addresses are added (and probed at once), engines whose address left stop receiving new
requests while those already there finish (BackendPool.remove_backend). A resolver error keeps
the engines found last (a DNS hiccup must not empty the pool); an empty answer empties it.

Engines are named by address (``http://10.0.0.7:8000``) and the balancer ranks them by
rendezvous hashing on that name (affinity.rendezvous_rank), never by list order: every replica
that sees the same addresses sends a prefix to the same engine, and an engine that comes or goes
moves only the prefixes it wins or won.

The system resolver (getaddrinfo: /etc/hosts, then the pod's DNS) is the default; ``nameserver``
asks one DNS server directly instead (dnspython), e.g. a local dnsmasq.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Protocol, Self
from urllib.parse import urlsplit

import dns.asyncresolver
import dns.exception
import dns.resolver

from gateway.background import stop_task
from gateway.config import BackendConfig
from gateway.routing.backends import BackendPool

log = logging.getLogger(__name__)

SCHEME = "dns"


def is_dns(url: str) -> bool:
    return url.lower().startswith(f"{SCHEME}://")


@dataclass(frozen=True)
class DnsTarget:
    """``dns://host:port`` -> the engines ``http://<address>:port``."""

    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> DnsTarget:
        parts = urlsplit(url)
        if parts.scheme.lower() != SCHEME or not parts.hostname:
            raise ValueError(f"not a dns://host:port backend: {url!r}")
        return cls(parts.hostname, parts.port or 8000)

    def engine_url(self, address: str) -> str:
        host = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
        return f"http://{host}:{self.port}"


class Resolver(Protocol):
    async def addresses(self, host: str) -> list[str]:
        """Every address of ``host``; raises OSError or dns.exception.DNSException on failure."""
        ...


class SystemResolver:
    """getaddrinfo, as any program on the host (or pod) resolves names."""

    async def addresses(self, host: str) -> list[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        return sorted({str(info[4][0]) for info in infos})


class NameserverResolver:
    """Asks one DNS server (``ip`` or ``ip:port``) for A and AAAA records."""

    def __init__(self, nameserver: str, timeout_s: float = 2.0) -> None:
        host, _, port = (
            nameserver.rpartition(":") if nameserver.count(":") == 1 else (nameserver, "", "")
        )
        self._resolver = dns.asyncresolver.Resolver(configure=False)
        self._resolver.nameservers = [host or nameserver]
        self._resolver.port = int(port) if port else 53
        self._resolver.lifetime = timeout_s

    async def addresses(self, host: str) -> list[str]:
        found: set[str] = set()
        for kind in ("A", "AAAA"):
            try:
                answer = await self._resolver.resolve(host, kind, search=False)
            except dns.resolver.NoAnswer:
                continue
            found.update(record.to_text() for record in answer)
        return sorted(found)


class DnsEngines:
    """``async with DnsEngines(pool, backends, resolver)`` keeps the pool in step with DNS."""

    def __init__(
        self,
        pool: BackendPool,
        backends: list[BackendConfig],
        resolver: Resolver | None = None,
        *,
        interval_s: float = 5.0,
    ) -> None:
        self._pool = pool
        self._targets = [(DnsTarget.parse(b.url), b) for b in backends]
        self._resolver = resolver or SystemResolver()
        self._interval = interval_s
        self._owned: dict[DnsTarget, set[str]] = {t: set() for t, _ in self._targets}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await self.refresh()  # engines known before the first request
        self._task = asyncio.create_task(self._follow(), name="dns-engines")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await stop_task(self._task)

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.refresh()

    async def refresh(self) -> None:
        """Resolves every name once and adds / drains engines to match."""
        for target, config in self._targets:
            try:
                found = await self._resolver.addresses(target.host)
            except (OSError, dns.exception.DNSException) as exc:
                if isinstance(exc, dns.resolver.NXDOMAIN | socket.gaierror) and _no_name(exc):
                    found = []  # the name has no addresses now (e.g. scaled to zero)
                else:
                    log.warning("resolving %s failed (%r): keeping its engines", target.host, exc)
                    continue
            await self._apply(target, config, {target.engine_url(a) for a in found})

    async def _apply(self, target: DnsTarget, config: BackendConfig, wanted: set[str]) -> None:
        owned = self._owned[target]
        for url in sorted(owned - wanted):
            log.info("engine %s left %s: draining it", url, target.host)
            self._pool.remove_backend(url)
        for url in sorted(wanted - owned):
            log.info("engine %s joined from %s", url, target.host)
            engine = config.model_copy(update={"url": url})
            await self._pool.probe(self._pool.add_backend(engine))
        self._owned[target] = wanted


def _no_name(exc: BaseException) -> bool:
    """The resolver answered that the name does not exist (not a timeout or a lost server)."""
    if isinstance(exc, socket.gaierror):
        return exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5))
    return True


def build_resolver(nameserver: str | None) -> Resolver:
    return NameserverResolver(nameserver) if nameserver else SystemResolver()
