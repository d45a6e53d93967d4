"""examples/faq.jsonl, warmed with the README's one command on `gateway up`'s defaults (the
admin key from the data dir's key file, the port from GATEWAY_PORT), then asked through the
API in front of the real engine with the real embedder: paraphrases that are not in the file
get the right answer from the cache, and a question the FAQ does not answer is not served."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from gateway.admin_key import local_key_hash
from gateway.config import BackendConfig
from tests.support.gateway import running_gateway

ROOT = Path(__file__).resolve().parents[2]
FAQ = ROOT / "examples" / "faq.jsonl"
# Paraphrases of questions in the file (none of them is in it), and the file's question whose
# answer each must get.
PARAPHRASES = {
    "How can I reset my password?": "How do I reset my password?",
    "how do i freeze my card": "How do I freeze my card?",
    "How can I unfreeze my card?": "How do I unfreeze my card?",
    "How can I close my account?": "How do I close my account?",
}
NOT_IN_FAQ = "How do I enable contactless payments on my card?"


def entries() -> list[dict[str, Any]]:
    return [json.loads(line) for line in FAQ.read_text(encoding="utf-8").splitlines() if line]


def test_the_faq_has_a_few_dozen_questions_with_several_phrasings_per_answer() -> None:
    lines = entries()
    questions = [e["messages"][-1]["content"] for e in lines]
    assert 30 <= len(lines) <= 100 and len(set(questions)) == len(questions)
    per_answer = Counter(e["answer"] for e in lines)
    assert len(per_answer) >= 10 and min(per_answer.values()) >= 3
    assert all(len(e["messages"]) == 1 and e["messages"][0]["role"] == "user" for e in lines)
    assert NOT_IN_FAQ not in questions and not set(PARAPHRASES) & set(questions)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def gateway_url(engine: Any, data_dir: Path) -> Iterator[str]:
    key_hash, _ = local_key_hash(data_dir)  # what `gateway up` does with no admin key set
    with running_gateway(
        backends=[BackendConfig(url=engine.url)], auth={"admin_key_hash": key_hash}
    ) as url:
        yield url


def ask(url: str, model: str, question: str, **headers: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": question}]}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=120)


def test_warmed_faq_answers_paraphrases_from_the_cache(
    gateway_url: str, engine: Any, data_dir: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_ADMIN_KEY"}
    env.update(ENGINE_DATA_DIR=str(data_dir), GATEWAY_PORT=str(urlparse(gateway_url).port))
    warm = subprocess.run(  # the README's command, as printed
        [sys.executable, "-m", "gateway", "cache", "warm", str(FAQ), "--model", engine.model],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert warm.returncode == 0, warm.stderr
    assert f"stored {len(entries())} entries" in warm.stdout

    answers = {e["messages"][-1]["content"]: e["answer"] for e in entries()}
    for paraphrase, original in PARAPHRASES.items():
        reply = ask(gateway_url, engine.model, paraphrase)
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-cache"] == "hit-semantic", (paraphrase, reply.headers)
        assert float(reply.headers["x-cache-similarity"]) >= 0.95
        assert reply.json()["choices"][0]["message"]["content"] == answers[original], paraphrase

    # Not in the FAQ (though close to "How do I activate my new card?"): no cached answer.
    unknown = ask(gateway_url, engine.model, NOT_IN_FAQ, **{"cache-control": "only-if-cached"})
    assert unknown.status_code == 504, unknown.text


def test_warm_without_any_admin_key_says_where_to_find_one(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_ADMIN_KEY"}
    env["ENGINE_DATA_DIR"] = str(tmp_path)
    warm = subprocess.run(
        [sys.executable, "-m", "gateway", "cache", "warm", str(FAQ), "--model", "m"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert warm.returncode != 0
    assert str(tmp_path / "admin-key") in warm.stderr and "gateway up" in warm.stderr
