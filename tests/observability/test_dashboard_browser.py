"""/dashboard in headless chromium, in front of the real engine with the real embedder, while
real traffic (misses, exact and semantic hits, streamed or not) flows: the page must draw data
that only exists after that traffic, load nothing from outside the gateway, log no JavaScript
error, and leave a screenshot ($DASHBOARD_SCREENSHOT, default: the temp dir; the README's
picture is refreshed with DASHBOARD_SCREENSHOT=docs/dashboard.png)."""

from __future__ import annotations

import itertools
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import BackendConfig
from tests.observability.browser import chromium, require_browser
from tests.support.gateway import running_gateway

pytestmark = pytest.mark.e2e

SCREENSHOT = Path(
    os.environ.get("DASHBOARD_SCREENSHOT") or Path(tempfile.gettempdir()) / "dashboard.png"
)
TRAFFIC_S = 30.0
QUESTIONS = [
    "How do I reset my password?",
    "What is the capital of France?",
    "Name a primary colour",
    "How do I activate my new card?",
    "Why was my transfer declined?",
    "How do I change my PIN?",
]


class Traffic:
    """Two clients: one asks the known questions again and again (hits after the first
    round, exact or, lower-cased and without the question mark, semantic), one keeps asking
    new questions (misses), half of them streamed."""

    def __init__(self, url: str, model: str) -> None:
        self.url, self.model = url, model
        self.results: dict[str, int] = {}
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._repeat, daemon=True),
            threading.Thread(target=self._fresh, daemon=True),
        ]

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)

    def ask(self, question: str, stream: bool) -> None:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": question}],
            "max_tokens": 32,
            "temperature": 0,
            "stop": [".", "\n"],
            "stream": stream,
        }
        r = httpx.post(f"{self.url}/v1/chat/completions", json=body, timeout=120)
        key = r.headers.get("x-cache", str(r.status_code))
        self.results[key] = self.results.get(key, 0) + 1

    def _repeat(self) -> None:
        for i in itertools.count():
            if self.stop.is_set():
                return
            question = QUESTIONS[i % len(QUESTIONS)]
            if i >= len(QUESTIONS) and i % 3 == 0:  # after the first round: paraphrases
                question = question.lower().rstrip("?")
            self.ask(question, stream=i % 2 == 1)
            time.sleep(0.15)

    def _fresh(self) -> None:
        for i in itertools.count():
            if self.stop.is_set():
                return
            self.ask(f"Give one short fact about the number {i + 7}", stream=i % 2 == 0)
            time.sleep(0.5)


@pytest.fixture(scope="module")
def gateway_url(engine: Any) -> Iterator[str]:
    with running_gateway(
        backends=[BackendConfig(url=engine.url)],
        cache={"store_timeout_s": 5.0, "audit": {"sample_rate": 1.0}},  # audit every one
        price_per_1k_tokens=0.5,
    ) as url:
        yield url


READ_PAGE = """
const num = (id) => Number(document.getElementById(id).dataset.value || 0);
const d = (sel) => (document.querySelector(sel) || {getAttribute: () => ""})
  .getAttribute("d") || "";
const charts = ["rps", "hit", "latency", "saved", "load"];
return {
  samples: Number(document.body.dataset.samples || 0),
  tiles: Object.fromEntries(["hit-ratio", "tokens", "cost", "p95", "ttft", "engines"]
    .map((name) => [name, num("tile-" + name)])),
  hit_ratio_text: document.querySelector("#tile-hit-ratio .value").textContent,
  audit: document.getElementById("tile-audit").dataset.value,
  audit_text: document.querySelector("#tile-audit .value").textContent,
  audit_sub: document.querySelector("#tile-audit .sub").textContent,
  points: Object.fromEntries(charts.map((c) =>
    [c, Number(document.getElementById("chart-" + c).dataset.points || 0)])),
  paths: Object.fromEntries([["rps", "miss"], ["rps", "hit-exact"], ["latency", "p95"],
    ["hit", "hit_ratio"], ["saved", "tokens_saved"]].map(([c, k]) =>
    [c + "/" + k, d(`#chart-${c} path.series[data-key='${k}']`)])),
  latency_labels: [...document.querySelectorAll("#chart-latency text")].map((e) => e.textContent),
  engines: [...document.querySelectorAll(".engine")].map((e) => ({
    url: e.dataset.url, health: e.dataset.health, breaker: e.dataset.breaker,
    text: e.textContent, lane_ok: e.querySelectorAll(".lane rect.ok").length})),
  resources: performance.getEntriesByType("resource").map((e) => e.name),
};
"""


def wait_until(check: Callable[[], Any], what: str, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        assert time.monotonic() < deadline, f"the page never showed {what}"
        time.sleep(0.2)
    return value


def test_dashboard_renders_live_data_from_real_traffic(gateway_url: str, engine: Any) -> None:
    require_browser()
    from selenium.webdriver.common.by import By

    with chromium() as browser:
        browser.get(f"{gateway_url}/dashboard")
        assert browser.title.startswith("semcache gateway")
        wait_until(lambda: browser.find_element(By.ID, "live").text == "live", "the live badge")
        browser.find_element(By.CSS_SELECTOR, "[data-window='60']").click()
        with Traffic(gateway_url, engine.model) as traffic:
            time.sleep(TRAFFIC_S)
            samples_during = int(browser.execute_script("return document.body.dataset.samples"))
        assert traffic.results.get("miss", 0) >= 3, traffic.results
        assert traffic.results.get("hit-exact", 0) >= 3, traffic.results
        assert traffic.results.get("hit-semantic", 0) >= 1, traffic.results
        time.sleep(2.5)  # the last requests reach a sample and the page polls it
        audited = "return document.getElementById('tile-audit').dataset.value"
        wait_until(lambda: browser.execute_script(audited), "an audited hit", timeout_s=90)

        page = browser.execute_script(READ_PAGE)  # one synchronous read: no redraw between
        # Live: the page kept polling while the traffic ran.
        assert page["samples"] > 10 and samples_during > 5
        # Tiles hold numbers that only exist after hits and misses.
        tiles = page["tiles"]
        assert 0 < tiles["hit-ratio"] < 1 and page["hit_ratio_text"].endswith("%")
        assert tiles["tokens"] > 0 and tiles["cost"] > 0
        assert tiles["p95"] > 0 and tiles["ttft"] > 0
        assert tiles["engines"] == 1
        # The semantic hits were audited: the agreement rate with its 95 % interval.
        assert 0 <= float(page["audit"]) <= 1 and page["audit_text"].endswith("%")
        assert "audited" in page["audit_sub"] and "%\u2013" in page["audit_sub"]  # low-high
        # Every chart drew series from data.
        for chart, count in page["points"].items():
            assert count > 0, chart
        for key in (
            "rps/miss",
            "rps/hit-exact",
            "latency/p95",
            "hit/hit_ratio",
            "saved/tokens_saved",
        ):
            assert page["paths"][key].count("L") >= 3, key
        # Labelled axes.
        assert {"seconds (log)", "time (local)"} <= set(page["latency_labels"])
        # The engine, healthy with its breaker closed, and its health history.
        [card] = page["engines"]
        assert card["url"] == engine.url and engine.model in card["text"]
        assert card["health"] == "up" and card["breaker"] == "closed"
        assert card["lane_ok"] > 10
        # Every asset came from the gateway; the page logged no error.
        resources = page["resources"]
        assert resources and all(r.startswith(gateway_url) for r in resources), resources
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []

        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.execute_cdp_cmd(  # a viewport as tall as the page: the whole page in one shot
            "Emulation.setDeviceMetricsOverride",
            {"width": 1600, "height": int(height), "deviceScaleFactor": 1, "mobile": False},
        )
        time.sleep(1.5)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 50_000
