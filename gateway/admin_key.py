"""The admin key of a local ``gateway up`` stack, so that ``gateway cache warm`` works on
``make run``'s defaults with nothing to configure.

``gateway up`` uses, first found: the configured ``auth.admin_key_hash``; the key in
``GATEWAY_ADMIN_KEY``; else a random key it keeps in ``<data dir>/admin-key`` (created once,
mode 0600, so only the user who runs the stack can read it). ``gateway cache warm`` reads the
same variable, else the same file. The key only ever leaves the file as a Bearer header.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from gateway.auth import hash_key

ENV = "GATEWAY_ADMIN_KEY"
FILE_NAME = "admin-key"


def key_file(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def read_local_key(data_dir: Path) -> str | None:
    """The key from GATEWAY_ADMIN_KEY, else from the data dir's key file, else None."""
    given = os.environ.get(ENV, "").strip()
    if given:
        return given
    try:
        return key_file(data_dir).read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def local_key_hash(data_dir: Path) -> tuple[str, str]:
    """(sha256 hash, where the key is) for ``gateway up``; makes the key file when needed."""
    given = os.environ.get(ENV, "").strip()
    if given:
        return hash_key(given), ENV
    path = key_file(data_dir)
    key = read_local_key(data_dir)
    if key is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = "sk-admin-" + secrets.token_urlsafe(24)
        # O_EXCL + 0600: never readable by others, never overwriting a key another start wrote.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise SystemExit(f"{path} exists but holds no key: remove it or fill it") from exc
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(key + "\n")
    return hash_key(key), str(path)
