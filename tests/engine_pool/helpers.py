"""Helpers for the pool tests (fake engine entries, process checks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

FAKE_VLLM = Path(__file__).with_name("fake_vllm.py")


def alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rfind(")") + 2 :].split()[0] != "Z"


def fake_engine(name: str, tmp_path: Path, *flags: str, **spec: Any) -> dict[str, Any]:
    """An engine entry running fake_vllm.py, with its state folder under tmp_path."""
    state = tmp_path / f"state-{name}"
    return {
        "name": name,
        "model": f"/models/{name}",
        "served_model_name": name,
        "extra_args": ["--fake-state", str(state), *flags],
        **spec,
    }


def start_times(tmp_path: Path, name: str) -> list[float]:
    log = tmp_path / f"state-{name}" / "starts.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [float(line.split()[2]) for line in lines]
