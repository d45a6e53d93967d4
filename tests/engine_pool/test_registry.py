"""The published engine list: atomic rewrites, readers never see half a file, watching."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from engine.registry import (
    EngineRecord,
    EngineState,
    PublishedPool,
    read_published,
    watch_published,
    write_published,
)


def pool(generation: int, ready: int, total: int = 50) -> PublishedPool:
    records = [
        EngineRecord(
            id=f"e{i}",
            url=f"http://127.0.0.1:{8000 + i}",
            models=["m"],
            state=EngineState.READY if i < ready else EngineState.STARTING,
        )
        for i in range(total)
    ]
    return PublishedPool.from_records(generation, records)


def test_backends_are_the_ready_engines_in_backend_config_shape(tmp_path: Path) -> None:
    from gateway.config import BackendConfig

    path = tmp_path / "engines.json"
    write_published(path, pool(3, ready=2, total=3))
    published = read_published(path)
    assert published is not None and published.generation == 3
    assert published.ready_urls() == ["http://127.0.0.1:8000", "http://127.0.0.1:8001"]
    backends = [BackendConfig.model_validate(b.model_dump()) for b in published.backends]
    assert [b.models for b in backends] == [["m"], ["m"]]
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_missing_or_broken_file_reads_as_none(tmp_path: Path) -> None:
    assert read_published(tmp_path / "nope.json") is None
    (tmp_path / "bad.json").write_text('{"generation": ')
    assert read_published(tmp_path / "bad.json") is None


def test_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "engines.json"
    write_published(path, pool(0, ready=0))
    stop = threading.Event()

    def writer() -> None:
        generation = 1
        while not stop.is_set():
            write_published(path, pool(generation, ready=generation % 50))
            generation += 1

    thread = threading.Thread(target=writer)
    thread.start()
    seen = set()
    try:
        for _ in range(300):
            published = read_published(path)
            assert published is not None  # a torn file would fail to parse
            assert len(published.backends) == published.generation % 50
            seen.add(published.generation)
    finally:
        stop.set()
        thread.join()
    assert len(seen) > 1


async def test_watch_yields_changes_only(tmp_path: Path) -> None:
    path = tmp_path / "engines.json"
    got: list[int] = []

    async def consume() -> None:
        async for published in watch_published(path, interval_s=0.02):
            got.append(published.generation)
            if published.generation == 2:
                return

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.1)  # no file yet: nothing yielded
    assert got == []
    write_published(path, pool(1, ready=1))
    await asyncio.sleep(0.1)
    write_published(path, pool(1, ready=1))  # same generation rewritten: not a change
    await asyncio.sleep(0.1)
    write_published(path, pool(2, ready=2))
    await asyncio.wait_for(task, 5)
    assert got == [1, 2]
