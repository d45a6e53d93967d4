"""Small statistics shared by the load generator and the benchmarks."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence


def quantile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank quantile (q in [0, 1]) of unsorted samples; nan when empty."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """n, p50, p90, p99 and mean, in milliseconds (3 decimals)."""
    if not seconds:
        return {"n": 0}
    return {
        "n": len(seconds),
        "p50_ms": round(1000 * quantile(seconds, 0.50), 3),
        "p90_ms": round(1000 * quantile(seconds, 0.90), 3),
        "p99_ms": round(1000 * quantile(seconds, 0.99), 3),
        "mean_ms": round(1000 * sum(seconds) / len(seconds), 3),
    }


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (the machine is shared: note them with numbers)."""
    return [round(x, 2) for x in os.getloadavg()]
