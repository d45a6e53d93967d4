"""An audit end to end: the real engine, the real embedder, the in-process store. A deliberately
wrong warmed answer is served to a paraphrase, the background audit asks the engine, finds the
answers disagree, and the entry is no longer served to that paraphrase."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.config import BackendConfig
from tests.support.cache_http import ADMIN, ASK, ask, auth_settings, cache_stats
from tests.support.gateway import running_gateway

pytestmark = pytest.mark.e2e

QUESTION = "What is the capital of France?"
PARAPHRASE = "What's the capital of France?"
WRONG = "Bananas are purple and grow at the bottom of the sea."


@pytest.fixture(scope="module")
def audited_gateway(engine: Any) -> Iterator[str]:
    with running_gateway(
        backends=[BackendConfig(url=engine.url)],
        cache={"store_timeout_s": 5.0, "audit": {"sample_rate": 1.0}},
        auth=auth_settings(),
    ) as url:
        yield url


def test_a_wrong_cached_answer_fails_its_audit_and_stops_being_served(
    audited_gateway: str, engine: Any
) -> None:
    url, model = audited_gateway, engine.model
    warm = httpx.post(
        f"{url}/admin/cache/warm",
        headers={"authorization": f"Bearer {ADMIN}"},
        json={
            "model": model,
            "tenant": "acme",
            "params": ASK,  # the scope of the requests ask() sends
            "entries": [{"messages": [{"role": "user", "content": QUESTION}], "answer": WRONG}],
        },
    )
    assert warm.status_code == 200 and warm.json() == {"stored": 1}

    served = ask(url, model, PARAPHRASE)
    assert served.headers["x-cache"] == "hit-semantic"
    assert served.parse().choices[0].message.content == WRONG

    deadline = time.monotonic() + 120  # the engine answers in seconds on a small CPU
    while (audit := cache_stats(url)["audit"])["audited"] + audit["failed"] < 1:
        assert time.monotonic() < deadline, f"the audit never finished: {audit}"
        time.sleep(0.2)
    assert audit["disagreed"] == 1 and audit["agreed"] == 0, audit
    assert audit["entries_raised"] == 1
    assert audit["agreement_rate"] == 0.0 and audit["agreement_high"] < 0.8

    again = ask(url, model, PARAPHRASE)
    assert again.headers["x-cache"] == "miss"  # an engine answers now
    assert again.parse().choices[0].message.content != WRONG
    metrics = httpx.get(f"{url}/metrics").text
    assert 'gateway_cache_audits_total{result="disagreed"} 1.0' in metrics
