"""``python -m gateway cache warm FILE.jsonl``: load known answers through the admin API.

Each line is ``{"messages": [...], "answer": "..."}`` (chat) or ``{"prompt": "...", "answer":
"..."}``. Lines go to the running gateway in batches, so the gateway's own embedder and store do
the work and the entries land exactly where requests will look for them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm


def _batches(path: Path, size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SystemExit(f"{path}:{number}: not JSON: {exc}") from exc
            if not isinstance(entry, dict):
                raise SystemExit(f"{path}:{number}: expected a JSON object")
            batch.append(entry)
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch


def warm_file(
    path: Path,
    *,
    url: str,
    admin_key: str,
    model: str,
    tenant: str,
    namespace: str,
    batch_size: int = 256,
) -> int:
    total = sum(1 for line in path.open(encoding="utf-8") if line.strip())
    stored = 0
    headers = {"authorization": f"Bearer {admin_key}"}
    with (
        httpx.Client(base_url=url, headers=headers, timeout=300) as client,
        tqdm(total=total, unit="entry", desc="warming", file=sys.stderr) as progress,
    ):
        for batch in _batches(path, batch_size):
            body = {"model": model, "tenant": tenant, "namespace": namespace, "entries": batch}
            response = client.post("/admin/cache/warm", json=body)
            if response.status_code != 200:
                raise SystemExit(f"gateway answered {response.status_code}: {response.text}")
            stored += int(response.json()["stored"])
            progress.update(len(batch))
    return stored
