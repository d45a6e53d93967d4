"""Polling a condition that another process or thread makes true (engine idle, a metric)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Returns once ``check()`` is true; fails the test naming ``what`` after ``timeout_s``
    (generous: a loaded 2-core CI box is slow, and only a failing test waits it out)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
