"""The Redis store's semantic search: one script on the scope's slot, one round trip.

VSIM scores are ``(1 + cosine) / 2`` and computed on Q8-quantized vectors. The conversion lives
in ``cosine_to_score``; a search asks VSIM for candidates down to the requested similarity
minus a margin (``Q8_MARGIN``), then recomputes every candidate's exact cosine from the stored
float32 vector, so a served similarity is never Redis' quantized one.

The script (``SEARCH``) runs VSIM and reads the candidates' payload hashes in the same call.
Those hashes' names are only known once VSIM answered, so they are not in KEYS; they share
the vector set's hash tag, so on a Redis Cluster they are on the slot the script runs on
(Redis checks that at run time and refuses a key of another slot). In a script VSIM searches
on Redis' main thread (as ``NOTHREAD``): for the few milliseconds of a k <= 100 search the
hand-off to a thread cost more than the search on a loaded 2-core box (docs/benchmarks.md 8).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from gateway.cache.entry import Neighbour
from gateway.cache.redis_keys import RedisKeys
from gateway.cache.redis_scripts import answered_no, entry_of, text
from gateway.redis_connect import RedisClient

Q8_MARGIN = 0.03  # cosine slack for Q8 quantization when pre-filtering candidates in Redis

# KEYS: the scope's vector set. ARGV: the query (float32 blob), k, the payload hashes' key
# prefix (``P:{S}:e:``), then VSIM options (EPSILON, EF). Returns id, e, v, m of each
# candidate, best first by Q8 score (false, i.e. nil, for a field or hash that is gone).
SEARCH = """
local reply = redis.call('VSIM', KEYS[1], 'FP32', ARGV[1], 'COUNT', ARGV[2], unpack(ARGV, 4))
local out = {}
for _, id in ipairs(reply) do
  local fields = redis.call('HMGET', ARGV[3] .. id, 'e', 'v', 'm')
  out[#out + 1] = id
  out[#out + 1] = fields[1]
  out[#out + 1] = fields[2]
  out[#out + 1] = fields[3]
end
return out
"""


def cosine_to_score(cosine: float) -> float:
    """VSIM's similarity score for a cosine similarity (the one place this is converted)."""
    return (1.0 + cosine) / 2.0


class ScopeSearch:
    """``search`` of RedisStore (see CacheStore.search)."""

    def __init__(
        self,
        client: RedisClient,
        keys: RedisKeys,
        clock: Callable[[], float],
        search_ef: int | None = None,
    ) -> None:
        """``search_ef``: VSIM's EF (None: Redis' default, COUNT-dependent)."""
        self._r = client
        self._k = keys
        self._clock = clock
        self._search_ef = search_ef
        self._script = client.register_script(SEARCH)

    async def search(
        self, scope: str, vector: np.ndarray, k: int, min_similarity: float = -1.0
    ) -> list[Neighbour]:
        query = np.asarray(vector, dtype=np.float32)
        key = self._k.vectors(scope)
        args: list[Any] = [query.astype("<f4").tobytes(), k, self._k.entry(scope, "")]
        floor = min_similarity - Q8_MARGIN
        if floor > -1.0:
            args += ["EPSILON", 1.0 - cosine_to_score(floor)]
        if self._search_ef is not None:
            args += ["EF", max(self._search_ef, k)]
        with answered_no():
            reply = await self._script(keys=[key], args=args)
        now, found, stale = self._clock(), [], []
        for at in range(0, len(reply), 4):
            entry_id, raw, blob, learned = reply[at : at + 4]
            if raw is None:
                stale.append(text(entry_id))
                continue
            entry = entry_of(raw, learned)
            if not entry.is_live(now) or blob is None:
                continue
            similarity = float(np.frombuffer(blob, dtype="<f4") @ query)
            if similarity >= min_similarity:
                found.append(Neighbour(entry, similarity))
        if stale:  # payload expired: the vector is dead weight, drop it now
            async with self._r.pipeline(transaction=False) as pipe:
                for entry_id in stale:
                    pipe.execute_command("VREM", key, entry_id)
                    pipe.zrem(self._k.expiries(scope), entry_id)
                await pipe.execute()
        found.sort(key=lambda neighbour: neighbour.similarity, reverse=True)
        return found
