"""The Redis store's key names: every key of one scope shares the scope's hash tag.

``P`` is the configured prefix, ``S`` a scope id ``"<namespace>:<digest>"``:

- ``P:{S}:v``     vector set (VADD/VSIM, HNSW, Q8) of the scope's entry ids.
- ``P:{S}:z``     sorted set entry id -> expires_at: drives the sweep and the per-scope bound.
- ``P:{S}:e:ID``  hash ``e`` (entry JSON), ``v`` (float32 vector), ``m`` (learned similarity).
- ``P:{S}:x:K``   exact key -> entry id.
- ``P:{S}:ack``   a scratch write that WAIT counts replicas against (see RedisStore.add).
- ``P:id:ID``     entry id -> scope, for the calls that name an entry by its id alone (admin
  get/delete, audits); its own slot.
- ``P:scopes`` and ``P:ns:NAMESPACE``  sets of scope ids (sweep, count, namespace deletes).

Redis Cluster hashes only the part between the first ``{`` and the next ``}``, so a scope's
keys all live on one slot (one master): its MULTI transactions, Lua scripts and pipelines
stay there, while different scopes spread over the masters. On a single Redis the braces are
plain characters. A key prefix must not contain braces (it would put every key on one slot).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RedisKeys:
    prefix: str

    def tag(self, scope: str) -> str:
        return f"{self.prefix}:{{{scope}}}"

    def vectors(self, scope: str) -> str:
        return f"{self.tag(scope)}:v"

    def expiries(self, scope: str) -> str:
        return f"{self.tag(scope)}:z"

    def entry(self, scope: str, entry_id: str) -> str:
        return f"{self.tag(scope)}:e:{entry_id}"

    def exact(self, scope: str, exact_key: str) -> str:
        return f"{self.tag(scope)}:x:{exact_key}"

    def ack(self, scope: str) -> str:
        return f"{self.tag(scope)}:ack"

    def scope_of(self, entry_id: str) -> str:
        return f"{self.prefix}:id:{entry_id}"

    def namespace(self, namespace: str) -> str:
        return f"{self.prefix}:ns:{namespace}"

    @property
    def scopes(self) -> str:
        return f"{self.prefix}:scopes"

    @property
    def pattern(self) -> str:
        """SCAN MATCH pattern of every key of this store."""
        return f"{self.prefix}:*"

    def is_entry_pointer(self, key: str) -> bool:
        """One ``P:id:ID`` per stored entry: what flush() counts."""
        return key.startswith(f"{self.prefix}:id:")
