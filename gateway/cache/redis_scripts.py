"""The Redis store's Lua scripts (each one atomic on the server) and reply parsing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from redis.exceptions import (
    AskError,
    ClusterDownError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)

from gateway.cache.entry import StoredEntry
from gateway.cache.store import StoreRejected

# One entry's writes, atomic on its scope's slot (a script, not MULTI: redis-py 8.1's asyncio
# cluster client runs each command queued in a MULTI pipeline in a thread of its own and joins
# it, blocking the event loop ~2 ms per command). KEYS: exact key, payload hash, vector set,
# sorted set. ARGV: entry id, expiry (unix ms), entry JSON, float32 vector ('' for none),
# expiry (unix s, the sorted set's score), VADD's EF. Returns the exact key's previous entry
# id, or nil.
# The scope's two sets live at least as long as their longest-lived entry.
ADD = """
local previous = redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2], 'GET')
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[2], 'e', ARGV[3], 'v', ARGV[4])
  redis.call('VADD', KEYS[3], 'FP32', ARGV[4], ARGV[1], 'Q8', 'EF', ARGV[6])
else
  redis.call('HSET', KEYS[2], 'e', ARGV[3])
end
redis.call('PEXPIREAT', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
for i = 3, 4 do
  redis.call('PEXPIREAT', KEYS[i], ARGV[2], 'NX')
  redis.call('PEXPIREAT', KEYS[i], ARGV[2], 'GT')
end
return previous
"""
# Remove an exact-key pointer only if it still points at the given entry.
DEL_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Pop the entries over the bound, closest to expiry first, atomically (no double eviction).
TRIM = """
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[1])
if over > 0 then return redis.call('ZPOPMIN', KEYS[1], over) end
return {}
"""
# Raise an entry's learned similarity (field m of its payload hash), never lower it; the hash
# keeps its TTL. 0: the entry is gone.
RAISE_MIN = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local current = tonumber(redis.call('HGET', KEYS[1], 'm') or '-2')
if tonumber(ARGV[1]) > current then redis.call('HSET', KEYS[1], 'm', ARGV[1]) end
return 1
"""


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# Errors a Redis Cluster answers while a slot moves or its master fails over: the store is
# unavailable for a moment (the caller rests and bypasses), not refusing the operation.
MOVING = (ClusterDownError, TryAgainError, AskError, ReadOnlyError)


@contextmanager
def answered_no() -> Iterator[None]:
    """Redis answered with an error (out of memory, wrong type, ...): it is up, not down."""
    try:
        yield
    except MOVING:
        raise
    except ResponseError as exc:
        raise StoreRejected(str(exc)) from exc


def entry_of(raw: bytes | str, learned: bytes | str | None) -> StoredEntry:
    """An entry from its JSON and its hash's ``m`` field (the learned similarity), if any."""
    entry = StoredEntry.from_json(raw)
    if learned is not None and float(learned) > entry.min_similarity:
        return replace(entry, min_similarity=float(learned))
    return entry
