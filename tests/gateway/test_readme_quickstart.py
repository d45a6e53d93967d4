"""The README's quick start, run as printed (only the port changed) against the gateway as
`gateway up` serves it (the bundled model's budget, its admin key) in front of the real engine
with the real embedder: ask (miss), ask again (exact hit), a paraphrase (semantic hit), the
opposite question (miss). How fast each is: docs/benchmarks.md, not a timed test."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.models import prepare_default_model
from gateway.config import Settings
from gateway.launcher import BUNDLED_MAX_TOKENS, served_settings
from gateway.server import uvicorn_server
from tests.support.servers import free_port, serve_in_thread

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"


def quick_start_code() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Quick start") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no python block in the README's quick start"
    return match.group(1)


@pytest.fixture(scope="module")
def gateway_url(engine: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(host="127.0.0.1", port=free_port(), log_level="warning")
    data = tmp_path_factory.mktemp("up")
    served, _ = served_settings(settings, engine.url, engine.model, prepare_default_model(), data)
    with serve_in_thread(uvicorn_server(served)) as url:
        yield url


def test_the_quick_start_runs_as_printed(
    gateway_url: str, engine: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code = quick_start_code()
    assert code.count("http://127.0.0.1:8080/v1") == 1 and f'"{engine.model}"' in code
    exec(compile(code.replace("http://127.0.0.1:8080", gateway_url), "README", "exec"), {})

    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [row[0] for row in rows] == ["miss", "hit-exact", "hit-semantic", "miss"], rows
    assert float(rows[2][1]) >= 0.95  # the similarity the README prints
    assert BUNDLED_MAX_TOKENS == 128  # what the README says of the bundled model's budget
