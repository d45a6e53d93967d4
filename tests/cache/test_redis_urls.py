"""The Redis URL decides the mode: one server, or a Redis Cluster (redis+cluster://)."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from gateway.cache import CacheConfig
from gateway.redis_connect import cluster_seeds, connect, is_cluster, is_tls


def test_cluster_urls_name_every_seed_and_keep_credentials_and_options() -> None:
    single, seeds = cluster_seeds("redis+cluster://user:p%40ss@h1:7000,h2,10.0.0.3:7002/?x=1")
    assert seeds == [("h1", 7000), ("h2", 6379), ("10.0.0.3", 7002)]
    assert single == "redis://user:p%40ss@h1:7000/?x=1"
    assert cluster_seeds("rediss+cluster://h:1")[0] == "rediss://h:1"
    with pytest.raises(ValueError):
        cluster_seeds("redis+cluster://")


def test_the_scheme_picks_the_client() -> None:
    assert is_cluster("redis+cluster://h:1") and is_cluster("REDISS+CLUSTER://h:1")
    assert not is_cluster("redis://h:1") and not is_cluster(None)
    assert is_tls("rediss+cluster://h:1") and not is_tls("redis+cluster://h:1")
    client = connect(
        "redis+cluster://u:pw@h1:7000,h2:7001", connect_timeout_s=1, socket_timeout_s=1
    )
    assert isinstance(client, RedisCluster)
    assert [(n.host, n.port) for n in client.nodes_manager.startup_nodes.values()] == [
        ("h1", 7000),
        ("h2", 7001),
    ]
    assert client.connection_kwargs["password"] == "pw"


def test_tls_settings_accept_a_tls_cluster_url_and_refuse_a_plain_one() -> None:
    tls = CacheConfig(redis_url="rediss+cluster://h:1", redis_tls_verify=False)
    assert tls.redis_tls_options()["ssl_cert_reqs"] == "none"
    plain = CacheConfig(redis_url="redis+cluster://h:1", redis_ca_cert=Path("ca.pem"))
    with pytest.raises(ValueError):
        plain.redis_tls_options()
