"""PNG plots of load runs (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

COLOURS = {"hit-exact": "tab:green", "hit-semantic": "tab:blue", "miss": "tab:orange"}


class _Record(Protocol):
    start_s: float
    cache: str
    latency_s: float
    verdict: str | None


def plot_load_run(records: Sequence[_Record], report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cdf, timeline, ratio) = plt.subplots(1, 3, figsize=(15, 4.2))
    for status in ("hit-exact", "hit-semantic", "miss"):
        values = sorted(1000 * r.latency_s for r in records if r.cache == status)
        if values:
            ys = [(i + 1) / len(values) for i in range(len(values))]
            cdf.plot(values, ys, label=f"{status} (n={len(values)})", color=COLOURS[status])
    cdf.set_xscale("log")
    cdf.set_xlabel("latency (ms, client side)")
    cdf.set_ylabel("fraction of requests")
    cdf.set_title("Latency CDF")
    cdf.grid(alpha=0.3)
    cdf.legend(fontsize=8)

    for status, colour in COLOURS.items():
        chosen = [r for r in records if r.cache == status]
        timeline.scatter([r.start_s for r in chosen], [1000 * r.latency_s for r in chosen],
                         s=6, color=colour, label=status)  # fmt: skip
    false = [r for r in records if r.verdict == "false"]
    if false:
        timeline.scatter([r.start_s for r in false], [1000 * r.latency_s for r in false],
                         s=30, facecolors="none", edgecolors="red", label="false hit")  # fmt: skip
    timeline.set_yscale("log")
    timeline.set_xlabel("request start (s)")
    timeline.set_ylabel("latency (ms)")
    timeline.set_title("Requests over time")
    timeline.grid(alpha=0.3)
    timeline.legend(fontsize=8)

    ordered = sorted(records, key=lambda r: r.start_s)
    hits, xs, ys = 0, [], []
    for i, record in enumerate(ordered, 1):
        hits += record.cache.startswith("hit")
        xs.append(record.start_s)
        ys.append(hits / i)
    ratio.plot(xs, ys, color="tab:blue")
    ratio.set_ylim(0, 1)
    ratio.set_xlabel("request start (s)")
    ratio.set_ylabel("cumulative hit ratio")
    ratio.set_title(
        f"hit ratio {report['hit_ratio']:.2f}, false-hit ratio {report['false_hit_ratio']:.3f}, "
        f"{report['throughput_rps']} req/s"
    )
    ratio.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
