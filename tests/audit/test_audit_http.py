"""Audits through the gateway's HTTP surface with a stub engine: streamed and non-streamed
semantic hits are audited after they were served, exact hits are not, the results show in the
admin stats, /metrics and the dashboard's data, and audits use no key's rate limits."""

from __future__ import annotations

import time
from typing import Any

import httpx

from gateway.auth import hash_key
from gateway.config import BackendConfig
from tests.support.cache_http import ADMIN, warm
from tests.support.gateway import running_gateway
from tests.support.stub_engines import MODEL, running_fault_engine

KEY = "key-limited"
ADMIN_HEADERS = {"authorization": f"Bearer {ADMIN}"}
QUESTION = "How do I reset my password?"
# These tests count the engine's calls to see audits; a semantic hit's speculative engine
# request (withdrawn, tests/gateway/test_speculative_miss.py) would count as one (it is off by
# default; explicit here so that turning it on by default keeps these tests honest).
NO_SPECULATION: dict[str, Any] = {"speculative_miss": False}


def ask(url: str, text: str, **extra: Any) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}
    return httpx.post(
        f"{url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {KEY}"},
        timeout=30,
    )


def audit_stats(url: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/admin/cache/stats", headers=ADMIN_HEADERS)
    assert r.status_code == 200
    audit: dict[str, Any] = r.json()["audit"]
    return audit


def wait_audits(url: str, done: int) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while (stats := audit_stats(url))["audited"] + stats["failed"] < done:
        assert time.monotonic() < deadline, f"the audits never finished: {stats}"
        time.sleep(0.05)
    return stats


def test_semantic_hits_are_audited_in_the_background_and_reported() -> None:
    auth = {
        "admin_key_hash": hash_key(ADMIN),
        # Two requests a minute, 30 tokens: an audit counted against the key would exhaust it.
        "keys": [
            {"hash": hash_key(KEY), "tenant": "acme", "requests_per_minute": 2,
             "tokens_per_minute": 30},
        ],
    }  # fmt: skip
    with (
        running_fault_engine() as engine,
        running_gateway(
            backends=[BackendConfig(url=engine.url)],
            cache=NO_SPECULATION | {"audit": {"sample_rate": 1.0}, "store_timeout_s": 5.0},
            routing={"budget": {"max_tokens": 16}},
            auth=auth,
        ) as url,
    ):
        warm(url, MODEL, {QUESTION: "Bananas."})
        assert audit_stats(url)["audited"] == 0

        engine.delay_s = 2.0  # a slow engine: the hit must not wait for its audit
        started = time.monotonic()
        hit = ask(url, "how do i reset my password", stream=True)
        assert hit.status_code == 200 and hit.headers["x-cache"] == "hit-semantic"
        assert "Bananas." in hit.text and time.monotonic() - started < 1.5
        stats = wait_audits(url, 1)
        assert stats["disagreed"] == 1 and stats["agreement_rate"] == 0.0
        assert engine.calls == 1 and engine.bodies[-1]["stream"] is False
        engine.delay_s = 0.0
        assert engine.bodies[-1]["max_completion_tokens"] == 16  # the budget clamp

        # The entry failed its audit: the same paraphrase is no longer served from it. The
        # miss is this key's second request, and its tokens fit only if the audit took none.
        miss = ask(url, "how do i reset my password", max_tokens=16)
        assert miss.status_code == 200, miss.text
        assert miss.headers["x-cache"] == "miss"
        assert miss.json()["choices"][0]["message"]["content"] == "Hello from the stub."
        assert audit_stats(url)["audited"] == 1  # misses are not audited

        metrics = httpx.get(f"{url}/metrics").text
        assert 'gateway_cache_audits_total{result="disagreed"} 1.0' in metrics
        assert 'gateway_cache_audits_total{result="agreed"} 0.0' in metrics
        assert 'gateway_cache_audits_total{result="capped"} 0.0' in metrics
        assert "gateway_cache_audit_agreement_ratio 0.0" in metrics
        assert "gateway_cache_audit_agreement_ratio_high 0.79" in metrics  # Wilson, n = 1
        dashboard = httpx.get(f"{url}/dashboard/data").json()
        assert dashboard["audit"]["disagreed"] == 1
        assert dashboard["audit"]["agreement_high"] > 0.79


def test_exact_hits_are_not_audited_and_sample_rate_0_turns_audits_off() -> None:
    with (
        running_fault_engine() as engine,
        running_gateway(
            backends=[BackendConfig(url=engine.url)],
            cache=NO_SPECULATION | {"audit": {"sample_rate": 1.0}, "store_timeout_s": 5.0},
        ) as on,
        running_gateway(
            backends=[BackendConfig(url=engine.url)],
            cache=NO_SPECULATION | {"audit": {"sample_rate": 0.0}, "store_timeout_s": 5.0},
        ) as off,
    ):
        for url in (on, off):
            body = {"model": MODEL, "messages": [{"role": "user", "content": QUESTION}]}
            first = httpx.post(f"{url}/v1/chat/completions", json=body)
            assert first.headers["x-cache"] == "miss"
            deadline = time.monotonic() + 10
            while httpx.post(f"{url}/v1/chat/completions", json=body).headers["x-cache"] == "miss":
                assert time.monotonic() < deadline, "the answer was never stored"
                time.sleep(0.05)
            again = httpx.post(f"{url}/v1/chat/completions", json=body)
            assert again.headers["x-cache"] == "hit-exact"
        calls = engine.calls
        time.sleep(0.5)
        assert engine.calls == calls  # no audit of the exact hits
        assert httpx.get(f"{on}/dashboard/data").json()["audit"]["audited"] == 0
        assert httpx.get(f"{off}/dashboard/data").json()["audit"] is None
        assert "gateway_cache_audits_total" not in httpx.get(f"{off}/metrics").text
        paraphrase = {"model": MODEL, "messages": [{"role": "user", "content": QUESTION.lower()}]}
        assert (
            httpx.post(f"{off}/v1/chat/completions", json=paraphrase).headers["x-cache"]
            == "hit-semantic"
        )
        time.sleep(0.5)
        assert engine.calls == calls  # sample_rate 0: not audited either
