"""A cancel that a library lost: re-raised at the next point where it matters.

On Python 3.11, ``asyncio.wait_for`` returns its inner call's result and drops a cancel that
arrives in the same loop iteration as that call completes (CPython gh-86296; 3.12 rebuilt
``wait_for`` on ``asyncio.timeout`` and keeps it). redis-py sends every command through
``wait_for`` when the client has a ``socket_timeout``, as the gateway's clients do: a task
cancelled while a Redis command completes carries on as if nothing happened. Seen: a
speculative miss withdrawn while its shared flight claimed the lease went on to call the engine,
and nobody was left to abort that request.

A cancelled task keeps ``cancelling() > 0`` until someone uncancels it, so after such an await
``raise_if_cancelled()`` turns the lost cancel back into the CancelledError it should have been.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelled() -> None:
    """Raises CancelledError when the current task was cancelled but the await returned."""
    task = asyncio.current_task()
    if task is not None and task.cancelling() > 0:
        raise asyncio.CancelledError
