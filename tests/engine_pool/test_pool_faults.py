"""EnginePool supervision with fault injection: fake engines (fake_vllm.py) that crash, hang,
fail to start or fail their warm-up. The pool, EngineProcess and the process groups are real."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from engine.pool import EnginePool, PoolStartError
from engine.pool_config import PoolConfig
from engine.process import group_members
from engine.registry import EngineState, PublishedPool, read_published
from tests.engine_pool.helpers import alive, fake_engine, start_times

MakeConfig = Callable[..., PoolConfig]


async def info(url: str) -> dict[str, int]:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        response = await client.get(f"{url}/fake/info")
        data: dict[str, int] = response.json()
        return data


async def post(url: str, path: str) -> None:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        await client.post(f"{url}{path}")


async def wait_for(
    pool: EnginePool, predicate: Callable[[PublishedPool], bool], timeout: float = 20.0
) -> PublishedPool:
    async with asyncio.timeout(timeout):
        async for snapshot in pool.watch():
            if predicate(snapshot):
                return snapshot
    raise AssertionError("pool stopped before the condition held")


def state_of(snapshot: PublishedPool, engine_id: str) -> EngineState:
    return next(e.state for e in snapshot.engines if e.id == engine_id)


async def test_engines_are_warmed_up_then_published(
    tmp_path: Path, fake_pool_config: MakeConfig
) -> None:
    config = fake_pool_config(
        [
            fake_engine("a", tmp_path),
            fake_engine("b", tmp_path, "--fake-startup-delay", "0.5"),
        ]
    )
    seen_ready: list[tuple[str, int]] = []

    async def on_change(snapshot: PublishedPool) -> None:
        for backend in snapshot.backends:
            if backend.id not in {engine for engine, _ in seen_ready}:
                seen_ready.append((backend.id, (await info(backend.url))["completions"]))

    pool = EnginePool(config, ready_timeout_s=20)
    pool.subscribe(on_change)
    async with pool:
        published = read_published(tmp_path / "engines.json")
        assert published is not None
        assert sorted(b.id for b in published.backends) == ["a", "b"]
        assert {tuple(b.models) for b in published.backends} == {("a",), ("b",)}
        for record in pool.records:
            assert record.state == EngineState.READY
            assert record.warmup_s is not None and record.startup_s is not None
            answer = await info(record.url)
            assert answer["completions"] == 1  # exactly one warm-up request
        await asyncio.sleep(0.1)
        # Published as ready only after the warm-up request had reached the engine.
        assert sorted(seen_ready) == [("a", 1), ("b", 1)]
    final = read_published(tmp_path / "engines.json")
    assert final is not None and final.backends == []
    assert {e.state for e in final.engines} == {EngineState.STOPPED}


async def test_crashed_engine_is_unpublished_and_restarted(
    tmp_path: Path, fake_pool_config: MakeConfig
) -> None:
    config = fake_pool_config([fake_engine("a", tmp_path), fake_engine("b", tmp_path)])
    async with EnginePool(config, ready_timeout_s=20) as pool:
        first = {r.id: r for r in pool.records}
        await post(first["a"].url, "/fake/die")
        gone = await wait_for(pool, lambda s: state_of(s, "a") != EngineState.READY)
        assert [b.id for b in gone.backends] == ["b"]
        back = await wait_for(pool, lambda s: state_of(s, "a") == EngineState.READY)
        record = next(e for e in back.engines if e.id == "a")
        assert record.restarts == 1
        assert record.last_exit_code == 3
        assert record.pid != first["a"].pid
        assert sorted(b.id for b in back.backends) == ["a", "b"]
        assert (await info(record.url))["completions"] == 1  # warmed up again
        assert next(e for e in back.engines if e.id == "b").restarts == 0


async def test_failed_starts_back_off_exponentially(
    tmp_path: Path, fake_pool_config: MakeConfig
) -> None:
    config = fake_pool_config([fake_engine("a", tmp_path, "--fake-fail-starts", "3")])
    delays: list[float] = []

    def on_change(snapshot: PublishedPool) -> None:  # called synchronously on each change
        record = snapshot.engines[0]
        if record.state == EngineState.BACKOFF and record.next_restart_at is not None:
            delays.append(record.next_restart_at - time.time())

    pool = EnginePool(config, ready_timeout_s=60)
    pool.subscribe(on_change)
    async with pool:
        record = pool.records[0]
        assert record.state == EngineState.READY
        assert record.restarts == 3
    # initial 0.3 s, factor 2, no jitter: 0.3, 0.6, 1.2.
    assert [round(d, 1) for d in delays] == [0.3, 0.6, 1.2]
    times = start_times(tmp_path, "a")
    assert len(times) == 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    for gap, expected in zip(gaps, [0.3, 0.6, 1.2], strict=True):
        assert gap >= expected, gaps  # the engine really waited (plus its start-up time)


async def test_gives_up_after_max_restarts(tmp_path: Path, fake_pool_config: MakeConfig) -> None:
    config = fake_pool_config(
        [fake_engine("bad", tmp_path, "--fake-fail-starts", "99"), fake_engine("ok", tmp_path)],
        backoff={"max_restarts": 2, "initial_s": 0.1},
    )
    with pytest.raises(PoolStartError, match="bad=failed"):
        async with EnginePool(config, ready_timeout_s=30):
            pass
    assert len(start_times(tmp_path, "bad")) == 3  # first try + 2 restarts
    final = read_published(tmp_path / "engines.json")
    assert final is not None and final.backends == []


async def test_pool_with_min_ready_keeps_serving_when_one_engine_fails(
    tmp_path: Path, fake_pool_config: MakeConfig
) -> None:
    config = fake_pool_config(
        [fake_engine("bad", tmp_path, "--fake-fail-starts", "99"), fake_engine("ok", tmp_path)],
        backoff={"max_restarts": 1, "initial_s": 0.1},
        min_ready=1,
    )
    async with EnginePool(config, ready_timeout_s=30) as pool:
        snapshot = await wait_for(pool, lambda s: state_of(s, "bad") == EngineState.FAILED)
        assert [b.id for b in snapshot.backends] == ["ok"]


async def test_hung_engine_is_restarted(tmp_path: Path, fake_pool_config: MakeConfig) -> None:
    config = fake_pool_config([fake_engine("a", tmp_path)])
    async with EnginePool(config, ready_timeout_s=20) as pool:
        old_pid = pool.records[0].pid
        assert old_pid is not None
        await post(pool.records[0].url, "/fake/sick")
        sick = await wait_for(pool, lambda s: state_of(s, "a") != EngineState.READY)
        assert sick.backends == []
        back = await wait_for(pool, lambda s: state_of(s, "a") == EngineState.READY)
        assert back.engines[0].restarts == 1
        assert not alive(old_pid)  # the hung process was stopped, not leaked


async def test_failed_warmup_is_not_published(tmp_path: Path, fake_pool_config: MakeConfig) -> None:
    config = fake_pool_config(
        [fake_engine("a", tmp_path, "--fake-warmup-status", "500")],
        backoff={"max_restarts": 1, "initial_s": 0.1},
    )
    published: list[int] = []
    pool = EnginePool(config, ready_timeout_s=20)
    pool.subscribe(lambda snapshot: published.append(len(snapshot.backends)))
    with pytest.raises(PoolStartError, match="warm-up"):
        async with pool:
            pass
    assert len(start_times(tmp_path, "a")) == 2
    assert set(published) == {0}  # never announced to the gateway


async def test_stop_leaves_no_process_behind(tmp_path: Path, fake_pool_config: MakeConfig) -> None:
    config = fake_pool_config(
        [
            fake_engine("a", tmp_path, "--fake-spawn-child"),
            fake_engine("b", tmp_path, "--fake-spawn-child"),
        ]
    )
    pids: list[int] = []
    async with EnginePool(config, ready_timeout_s=20) as pool:
        for record in pool.records:
            proc = pool.process(record.id)
            assert proc is not None and proc.pid is not None
            members = group_members(proc.pid)
            child = (await info(record.url))["child_pid"]
            assert child in members and len(members) >= 2
            pids += [*members, child]
        assert all(alive(pid) for pid in pids)
    await asyncio.sleep(0.2)
    assert [pid for pid in pids if alive(pid)] == []


async def test_watch_ends_after_stop_and_file_is_valid_json(
    tmp_path: Path, fake_pool_config: MakeConfig
) -> None:
    config = fake_pool_config([fake_engine("a", tmp_path)])
    pool = EnginePool(config, ready_timeout_s=20)
    generations: list[int] = []

    async def consume() -> None:
        async for snapshot in pool.watch():
            generations.append(snapshot.generation)

    async with pool:
        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0.1)
    await asyncio.wait_for(consumer, 5)
    assert generations == sorted(generations) and len(generations) >= 1
    data = json.loads((tmp_path / "engines.json").read_text())
    assert data["generation"] == generations[-1]
    assert data["engines"][0]["state"] == "stopped"
