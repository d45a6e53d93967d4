"""/playground in headless chromium, in front of the real engine with the real embedder and the
FAQ of examples/ warmed in: behind API keys the page shows nothing until a key is typed; then
each answer shows where it came from (an exact hit, a semantic hit with its similarity, a miss
streamed from the engine, a bypass) and how long it took, and the buttons ask again or bypass
the cache. It leaves a screenshot ($PLAYGROUND_SCREENSHOT, default: the temp dir; the README's
picture is refreshed with PLAYGROUND_SCREENSHOT=docs/playground.png)."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import BackendConfig
from tests.observability.browser import chromium, require_browser
from tests.support.cache_http import ADMIN, KEYS, auth_settings
from tests.support.gateway import running_gateway

pytestmark = pytest.mark.e2e

FAQ = Path(__file__).resolve().parents[2] / "examples" / "faq.jsonl"
SCREENSHOT = Path(
    os.environ.get("PLAYGROUND_SCREENSHOT") or Path(tempfile.gettempdir()) / "playground.png"
)
WARMED = "How do I reset my password?"
PARAPHRASE = "How can I reset my password?"  # not in the FAQ; cosine 0.99 to WARMED
NEW = "What is the capital of France?"

READ_EXCHANGES = """
return [...document.querySelectorAll(".exchange")].map((e) => ({
  state: e.dataset.state, cache: e.dataset.cache || "", ms: Number(e.dataset.ms || -1),
  similarity: e.dataset.similarity || "", backend: e.dataset.backend || "",
  question: e.querySelector(".q").textContent, answer: e.querySelector(".text").textContent,
  meta: e.querySelector(".meta").textContent.replace(/\\s+/g, " ").trim(),
}));
"""


def faq_entries() -> list[dict[str, Any]]:
    return [json.loads(line) for line in FAQ.read_text(encoding="utf-8").splitlines() if line]


@pytest.fixture(scope="module")
def gateway_url(engine: Any) -> Iterator[str]:
    with running_gateway(
        backends=[BackendConfig(url=engine.url)],
        auth=auth_settings(),
        cache={"store_timeout_s": 5.0},
        # a short budget, as `gateway up` gives the bundled model: misses answer in seconds
        routing={"budget": {"models": {engine.model: {"max_tokens": 48}}}},
    ) as url:
        warm = httpx.post(
            f"{url}/admin/cache/warm",
            headers={"authorization": f"Bearer {ADMIN}"},
            json={"model": engine.model, "tenant": "acme", "entries": faq_entries()},
            timeout=120,
        )
        assert warm.status_code == 200, warm.text
        yield url


def shown_ms(meta: str, label: str) -> float:
    """A time the page shows as "<label> 143 ms" or "<label> 1.52 s", in milliseconds."""
    found = re.search(label + r" ([\d.]+) (ms|s)\b", meta)
    assert found, f"no {label!r} in {meta!r}"
    return float(found[1]) * (1 if found[2] == "ms" else 1000)


class Page:
    """The playground in a browser: ask, click, and read what each exchange shows."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser

    def exchanges(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.browser.execute_script(READ_EXCHANGES)
        return found

    def ask(self, question: str) -> dict[str, Any]:
        from selenium.webdriver.common.by import By

        self.browser.find_element(By.ID, "question").send_keys(question)
        self.browser.find_element(By.ID, "send").click()
        return self.wait_answer()

    def click(self, index: int, button: str) -> dict[str, Any]:
        from selenium.webdriver.common.by import By

        self.browser.find_elements(By.CSS_SELECTOR, ".exchange")[index].find_element(
            By.CSS_SELECTOR, f"button.{button}"
        ).click()
        return self.wait_answer()

    def wait_answer(self, timeout_s: float = 120.0) -> dict[str, Any]:
        """The newest exchange once it is done."""
        deadline = time.monotonic() + timeout_s
        while True:
            last = self.exchanges()[-1]
            if last["state"] in ("done", "error"):
                return last
            assert time.monotonic() < deadline, f"no answer: {last}"
            time.sleep(0.03)


def test_playground_shows_where_each_answer_came_from(gateway_url: str, engine: Any) -> None:
    require_browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    answers = {e["messages"][0]["content"]: e["answer"] for e in faq_entries()}
    with chromium(width=1280, height=900) as browser:
        browser.get(f"{gateway_url}/playground")
        assert browser.title.startswith("semcache gateway")
        page = Page(browser)

        # Keys are configured: without one the API answers 401 and the page says so.
        notice = browser.find_element(By.ID, "notice")
        deadline = time.monotonic() + 10
        while not notice.is_displayed():
            assert time.monotonic() < deadline, "no notice about the missing key"
            time.sleep(0.1)
        assert "API key" in notice.text
        assert browser.find_elements(By.CSS_SELECTOR, "#model option") == []
        browser.find_element(By.ID, "key").send_keys(KEYS["acme"], Keys.ENTER)
        deadline = time.monotonic() + 10
        while browser.execute_script("return document.body.dataset.models") != "1":
            assert time.monotonic() < deadline, "the models never loaded with the key"
            time.sleep(0.1)
        assert not notice.is_displayed()
        assert browser.find_element(By.ID, "model").get_attribute("value") == engine.model

        exact = page.ask(WARMED)
        assert (exact["state"], exact["cache"]) == ("done", "hit-exact"), exact
        assert exact["answer"] == answers[WARMED]
        assert "from the cache" in exact["meta"] and "total" in exact["meta"]

        semantic = page.ask(PARAPHRASE)
        assert (semantic["state"], semantic["cache"]) == ("done", "hit-semantic"), semantic
        assert semantic["answer"] == answers[WARMED]
        similarity = float(semantic["similarity"])
        assert similarity >= 0.95 and f"similarity {similarity:.3f}" in semantic["meta"]

        miss = page.ask(NEW)
        assert (miss["state"], miss["cache"]) == ("done", "miss"), miss
        assert miss["backend"] == engine.url and engine.url in miss["meta"]
        assert miss["answer"].strip() and "tokens" in miss["meta"], miss
        # It streamed in: the page saw its first token before the end (a short answer may come
        # and go between two looks at the page, so the partial texts seen are not counted on).
        assert shown_ms(miss["meta"], "first token") < shown_ms(miss["meta"], "total"), miss
        assert miss["ms"] > max(exact["ms"], semantic["ms"]) >= 0

        again = page.click(0, "again")
        assert (again["question"], again["cache"]) == (WARMED, "hit-exact"), again
        assert again["answer"] == answers[WARMED]

        bypass = page.click(0, "bypass")
        assert (bypass["question"], bypass["cache"]) == (WARMED, "bypass"), bypass
        assert bypass["backend"] == engine.url and "cache bypassed" in bypass["meta"]
        assert bypass["answer"].strip() and bypass["answer"] != answers[WARMED]
        assert len(page.exchanges()) == 5

        # Every asset came from the gateway; the only error logged is the keyless 401.
        resources = browser.execute_script(
            "return performance.getEntriesByType('resource').map((e) => e.name)"
        )
        assert resources and all(r.startswith(gateway_url) for r in resources), resources
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert all("/v1/models" in e["message"] and "401" in e["message"] for e in errors), errors

        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.execute_cdp_cmd(  # a viewport as tall as the page: the whole page in one shot
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": int(height), "deviceScaleFactor": 1, "mobile": False},
        )
        time.sleep(0.5)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 30_000
