"""Reading a gateway's /metrics in tests."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Scrape:
    families: dict[str, str]  # family name -> type
    samples: list[tuple[str, dict[str, str], float]]

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples called ``name`` whose labels include ``labels``."""
        return sum(
            v
            for n, sample_labels, v in self.samples
            if n == name and all(sample_labels.get(k) == want for k, want in labels.items())
        )

    def has(self, name: str, **labels: str) -> bool:
        return any(
            n == name and all(sample_labels.get(k) == want for k, want in labels.items())
            for n, sample_labels, _ in self.samples
        )


def scrape(url: str) -> Scrape:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families: dict[str, str] = {}
    samples: list[tuple[str, dict[str, str], float]] = []
    for family in text_string_to_metric_families(response.text):
        families[family.name] = family.type
        samples.extend((s.name, dict(s.labels), s.value) for s in family.samples)
    return Scrape(families, samples)
