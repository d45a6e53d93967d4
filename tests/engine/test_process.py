"""EngineProcess: start a real vLLM server, stop it with its whole process group.

The fault tests use a fake interpreter (a shell script that ignores SIGTERM and never
serves) in place of Python, to force the timeout and SIGKILL paths quickly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from engine.models import DEFAULT_MODEL_NAME, prepare_default_model
from engine.ports import free_port
from engine.process import EngineProcess, EngineStartError, group_members
from engine.spec import EngineSpec, detect_device

STUBBORN = """\
#!/bin/sh
trap '' TERM
echo "stubborn engine pid $$ args: $*"
sleep 600 &
sleep 600
"""


@pytest.fixture
def stubborn_python(tmp_path: Path) -> str:
    """A fake interpreter whose processes ignore SIGTERM and never open the port."""
    script = tmp_path / "stubborn-python"
    script.write_text(STUBBORN)
    script.chmod(0o755)
    return str(script)


def wait_until(predicate: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.e2e
async def test_real_engine_starts_serves_and_stops_without_leftovers(tmp_path: Path) -> None:
    spec = EngineSpec.for_device(
        detect_device(),
        model=str(prepare_default_model()),
        served_model_name="stop-test",
        port=free_port(),
        max_num_seqs=2,
        cpu_kvcache_space_gib=1,
    )
    async with EngineProcess(spec, tmp_path / "engine.log") as engine:
        pgid = engine.pid
        assert pgid is not None and engine.startup_seconds is not None
        assert engine.url == spec.url and engine.model == "stop-test"
        async with httpx.AsyncClient(trust_env=False) as client:
            models = (await client.get(f"{engine.url}/v1/models")).json()
        assert [m["id"] for m in models["data"]] == ["stop-test"]
        # guard + API server + EngineCore (+ its worker): vLLM's children share the group.
        assert len(group_members(pgid)) >= 3
    assert group_members(pgid) == []
    assert engine.returncode is not None
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{spec.url}/health", trust_env=False)
    log = (tmp_path / "engine.log").read_text()
    assert "--served-model-name stop-test" in log.splitlines()[0]  # the command, logged first
    assert engine.log_tail(5).splitlines() == log.splitlines()[-5:]


@pytest.mark.e2e
async def test_engine_that_dies_at_start_fails_fast_with_its_log(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    spec = EngineSpec(model=str(missing), port=free_port(), enforce_eager=True)
    engine = EngineProcess(spec, tmp_path / "engine.log", startup_timeout=300)
    started = time.monotonic()
    with pytest.raises(EngineStartError) as caught:
        await engine.start()
    assert time.monotonic() - started < 120  # not the 300 s timeout
    assert "exited with code" in str(caught.value)
    assert str(missing) in caught.value.log_tail
    assert engine.pid is not None and group_members(engine.pid) == []


def test_engine_never_ready_times_out_and_sigterm_deaf_group_is_killed(
    tmp_path: Path, stubborn_python: str
) -> None:
    spec = EngineSpec(model=DEFAULT_MODEL_NAME, port=free_port())
    engine = EngineProcess(
        spec,
        tmp_path / "engine.log",
        startup_timeout=2,
        stop_grace=1,
        poll_interval=0.1,
        python=stubborn_python,
    )
    started = time.monotonic()
    with pytest.raises(EngineStartError) as caught:
        engine.start_sync()
    assert "not ready after 2 s" in str(caught.value)
    assert "stubborn engine pid" in caught.value.log_tail
    assert engine.pid is not None and group_members(engine.pid) == []
    assert time.monotonic() - started < 20
    assert engine.stop() == engine.returncode  # idempotent


def test_stop_escalates_to_sigkill(tmp_path: Path, stubborn_python: str) -> None:
    spec = EngineSpec(model=DEFAULT_MODEL_NAME, port=free_port())
    engine = EngineProcess(spec, tmp_path / "engine.log", stop_grace=1, python=stubborn_python)
    engine.launch()
    assert engine.pid is not None
    pgid = engine.pid
    assert wait_until(lambda: len(group_members(pgid)) >= 3, 10)  # guard, sh, sleep(s)
    engine.stop()
    assert group_members(pgid) == []


ORPHAN_PARENT = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from engine.process import EngineProcess, group_members
    from engine.spec import EngineSpec
    spec = EngineSpec(model="m", port=int(sys.argv[3]))
    engine = EngineProcess(spec, Path(sys.argv[2]), stop_grace=1, python=sys.argv[1])
    engine.launch()
    deadline = time.monotonic() + 10
    while len(group_members(engine.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    print(json.dumps({"pgid": engine.pid, "members": group_members(engine.pid)}), flush=True)
    os._exit(0)  # dies without stopping anything, like a SIGKILLed test run
    """
)


def test_engine_does_not_outlive_a_parent_that_dies(tmp_path: Path, stubborn_python: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            ORPHAN_PARENT,
            stubborn_python,
            str(tmp_path / "e.log"),
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(info["members"]) >= 3
    assert wait_until(lambda: group_members(info["pgid"]) == [], 15), group_members(info["pgid"])
