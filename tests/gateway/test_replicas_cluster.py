"""Two real `python -m gateway serve` replicas on a real Redis Cluster (three masters, three
replicas), configured by the URL alone (GATEWAY_CACHE__REDIS_URL=redis+cluster://...): one
engine call per identical miss across them (shared flights), one cache, and the limits."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.gateway.test_replicas import ask, content, replicas
from tests.support.redis_cluster import LocalCluster
from tests.support.stub_engines import FaultEngine, running_fault_engine


@pytest.fixture(scope="module")
def stub() -> Iterator[FaultEngine]:
    with running_fault_engine(delay_s=1.0) as engine:
        yield engine


@pytest.fixture(scope="module")
def cluster_pair(stub: FaultEngine, redis_cluster: LocalCluster) -> Iterator[list[str]]:
    assert redis_cluster.url.startswith("redis+cluster://")
    with replicas(stub, redis_cluster.url) as handles:
        yield [h.url for h in handles]


def test_identical_misses_on_two_replicas_make_one_engine_call_on_a_cluster(
    cluster_pair: list[str], stub: FaultEngine
) -> None:
    text = f"Where is my card? {uuid.uuid4().hex}"
    before = stub.calls
    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda url: ask(url, text), cluster_pair * 3))
    assert [r.status_code for r in replies] == [200] * 6
    assert stub.calls == before + 1
    assert len({content(r) for r in replies}) == 1


def test_an_answer_stored_through_one_replica_is_served_by_the_other_on_a_cluster(
    cluster_pair: list[str], stub: FaultEngine
) -> None:
    a, b = cluster_pair
    for n in range(3):
        text = f"How do I top up, case {n}? {uuid.uuid4().hex}"
        first = ask(a, text)
        assert first.headers["x-cache"] == "miss"
        deadline = time.monotonic() + 10
        while (reply := ask(b, text)).headers["x-cache"] != "hit-exact":
            assert time.monotonic() < deadline, "the other replica never served the answer"
            time.sleep(0.1)
        assert content(reply) == content(first)
