"""Prefix affinity: the same prompt prefix goes to the same engine, so vLLM's prefix cache hits.

The key is a hash of the prompt's leading part, cut in fixed-size blocks. For chat, the leading
part is the canonical JSON of the tools and the messages up to the n-th user turn (system prompt
plus first turns), which stays the same as a conversation grows; for completions it is the
prompt text; a Responses request is read as the chat messages it renders to (instructions, then
its input items). Engines are ranked by weighted rendezvous (highest-random-weight) hashing, so
adding or removing an engine moves only the keys that engine wins or won.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

from gateway import responses_input
from gateway.routing.config import BalancerConfig


def prefix_text(body: dict[str, Any], *, user_turns: int = 1) -> str | None:
    """The part of the request that starts its rendered prompt, as text (None: no prompt)."""
    messages = body.get("messages")
    if messages is None and "input" in body:  # the Responses API
        messages = responses_input.chat_messages(body)
    if isinstance(messages, list) and messages:
        leading: list[Any] = []
        seen_users = 0
        for message in messages:
            leading.append(message)
            if isinstance(message, dict) and message.get("role") == "user":
                seen_users += 1
                if seen_users >= user_turns:
                    break
        head = {"tools": body.get("tools"), "messages": leading}
        return json.dumps(head, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt or None
    if isinstance(prompt, list) and prompt:
        first = prompt[0]
        if isinstance(first, str):
            return first or None
        return json.dumps(prompt if isinstance(first, int) else first, separators=(",", ":"))
    return None


def block_hashes(text: str, block_chars: int, max_blocks: int) -> list[str]:
    """Chained hashes of the first ``max_blocks`` blocks: entry i identifies blocks 0..i."""
    hashes: list[str] = []
    running = hashlib.blake2b(digest_size=16)
    for start in range(0, min(len(text), block_chars * max_blocks), block_chars):
        running.update(text[start : start + block_chars].encode())
        hashes.append(running.copy().hexdigest())
    return hashes


def affinity_key(model: str, body: dict[str, Any], config: BalancerConfig) -> str | None:
    """The request's affinity key: model + hash of its leading prefix blocks. A conversation's
    leading part (up to its n-th user turn) is keyed whole, however long: cut at
    ``prefix_blocks``, a long shared system prompt would give every conversation one key and
    send them all to one engine."""
    text = prefix_text(body, user_turns=config.affinity_user_turns)
    if text is None:
        return None
    keyed = f"{model}\x00{text}"
    blocks = config.prefix_blocks
    if "prompt" not in body:  # chat or Responses: the leading part ends where the turn does
        blocks = max(blocks, -(-len(keyed) // config.block_chars))
    return block_hashes(keyed, config.block_chars, blocks)[-1]


def _unit(key: str, node: str) -> float:
    """A uniform number in (0, 1) from (key, node)."""
    digest = hashlib.blake2b(f"{key}\x00{node}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2**64


def rendezvous_score(key: str, node: str, weight: float = 1.0) -> float:
    """Weighted HRW score (-w / ln u): a node wins a share of keys proportional to its weight."""
    return -weight / math.log(_unit(key, node))


def rendezvous_rank(key: str, nodes: Sequence[tuple[str, float]]) -> list[str]:
    """Node names, the key's preferred node first. ``nodes`` holds (name, weight) pairs."""
    scored = sorted(nodes, key=lambda n: rendezvous_score(key, n[0], n[1]), reverse=True)
    return [name for name, _ in scored]
