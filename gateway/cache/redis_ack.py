"""The replication barrier of the Redis store: how many replicas have a scope's writes.

``WAIT n ms`` counts the replicas that have every write *of the connection it is sent on*, so
it must follow a write on the very same connection. Sending ``SET <scope ack key>`` and
``WAIT`` through a redis-py pipeline is not enough: under load the cluster client was seen
running them on two connections (WAIT then returned at once and counted a frozen replica).
So both go out on one connection taken by hand from the pool of the master that serves the
scope's slot. Replication keeps order, so a replica that has this SET has every earlier write
of the scope. The master is the one the scope's transaction went to (``node`` taken before
it): if another master serves the slot by now, the barrier fails rather than vouch for writes
it may not have.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import RedisCluster

from gateway.cache.store import StoreRejected
from gateway.redis_connect import RedisClient


def serving_node(client: RedisClient, key: str) -> Any:
    """The cluster node serving ``key`` now (None on a single server)."""
    if isinstance(client, RedisCluster):
        return client.get_node_from_key(key)
    return None


async def require_replicas(
    client: RedisClient, key: str, node: Any, replicas: int, timeout_ms: int
) -> None:
    """Returns once ``replicas`` replicas have every write to ``key``'s slot; raises
    StoreRejected when fewer did within ``timeout_ms`` or the slot moved meanwhile."""
    try:
        got = await acknowledged(client, key, node, replicas, timeout_ms)
    except ReplicaLag as exc:
        raise StoreRejected(str(exc)) from exc
    if got < replicas:
        raise StoreRejected(f"{key}: {got} of {replicas} replicas acknowledged in {timeout_ms} ms")


class ReplicaLag(Exception):
    """The slot moved to another master between the writes and the barrier."""


async def acknowledged(
    client: RedisClient, key: str, node: Any, replicas: int, timeout_ms: int
) -> int:
    """How many replicas have every write made to ``key``'s slot so far (SET ``key``, then
    WAIT, on one connection of ``node``, the master the writes went to); raises ReplicaLag
    when the slot has moved to another master since."""
    if node is not None and serving_node(client, key).name != node.name:
        raise ReplicaLag(f"{key}: its slot moved to another master during the write")
    commands = [("SET", key, "1", "PX", "60000"), ("WAIT", replicas, timeout_ms)]
    if isinstance(client, RedisCluster):
        connection = node.acquire_connection()
        try:
            await node.disconnect_if_needed(connection)
            return await _send(connection, commands)
        finally:
            node.release(connection)
    pool = client.connection_pool
    connection = await pool.get_connection()
    try:
        return await _send(connection, commands)
    finally:
        await pool.release(connection)


async def _send(connection: Any, commands: list[tuple[Any, ...]]) -> int:
    try:
        await connection.send_packed_command(connection.pack_commands(commands))
        await connection.read_response()  # the SET: MOVED/READONLY raise here
        return int(await connection.read_response())
    except BaseException:
        await connection.disconnect()  # replies may be left unread: never reuse it
        raise
