"""Markdown tables of a load/bench_gpu_stack.py report (for docs/gpu.md).

python -m load.gpu_stack_report load/results/gpu-h200-stack.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _ms(summary: dict[str, Any] | None, key: str) -> str:
    if not summary or key not in summary:
        return "-"
    return f"{summary[key]:.1f}"


def _pair(summary: dict[str, Any] | None) -> str:
    return f"{_ms(summary, 'p50_ms')} / {_ms(summary, 'p99_ms')}"


def hit_miss(report: dict[str, Any]) -> list[str]:
    hits = report.get("hit_miss") or {}
    over = report.get("overhead") or {}
    lines = [
        "| through the gateway (ms, p50 / p99) | 1 client | 32 clients |",
        "| --- | ---: | ---: |",
    ]
    for label, key in (("exact hit", "exact"), ("semantic hit", "semantic")):
        one, many = hits.get(f"{key}_1"), hits.get(f"{key}_32")
        lines.append(f"| {label} | {_pair(one)} | {_pair(many)} |")
    for label, key, field in (
        ("miss, JSON latency", "json", "gateway_latency"),
        ("miss, streamed TTFT", "stream", "gateway_ttft"),
        ("miss, streamed latency", "stream", "gateway_latency"),
    ):
        one, many = over.get(f"{key}_1") or {}, over.get(f"{key}_32") or {}
        lines.append(f"| {label} | {_pair(one.get(field))} | {_pair(many.get(field))} |")
    return lines


def overhead(report: dict[str, Any], section: str = "overhead") -> list[str]:
    """The miss-overhead table of ``section`` (``overhead``, or ``overhead_speculative``: a
    gateway with speculative misses on); nothing when the run has no such section."""
    over = report.get(section) or {}
    if not over:
        return []
    lines = [
        f"{section}:",
        "| streams | measure | gateway p50 / p99 | engines direct p50 / p99 | added p50 / p99 "
        "| gateway replies (x-cache) |",
        "| ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for clients in (1, 32):
        for key, label, gw, en, add in (
            ("stream", "TTFT", "gateway_ttft", "engine_ttft", "added_ttft"),
            ("json", "JSON latency", "gateway_latency", "engine_latency", "added_latency"),
        ):
            row = over.get(f"{key}_{clients}")
            if not row:
                continue
            added = row.get(add) or {}
            x_cache = ", ".join(f"{k} {v}" for k, v in sorted(row["gateway_x_cache"].items()))
            lines.append(
                f"| {clients} | {label} | {_pair(row.get(gw))} | {_pair(row.get(en))} "
                f"| {added.get('p50_ms', '-')} / {added.get('p99_ms', '-')} | {x_cache} |"
            )
    return lines


def affinity(report: dict[str, Any]) -> list[str]:
    lines = [
        "| working set | strategy | requests | TTFT p50 | TTFT p99 | prefix-cache hits "
        "| wall | requests/s | spilled | engine split |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, block in (report.get("affinity") or {}).items():
        args = block["args"]
        label = f"{name} ({args['sessions']} sessions x {args['turns']} turns"
        if args.get("arrival_rate"):
            label += f", {args['arrival_rate']:g}/s open loop, think {args.get('think_s', 0):g} s"
        label += ")"
        for r in block["results"]:
            split = " / ".join(str(n) for _, n in sorted(r["engines"].items()))
            spilled = (r.get("route_reasons") or {}).get("spill", 0)
            lines.append(
                f"| {label} | {r['strategy']} | {r['requests']} | {1000 * r['ttft_p50_s']:.1f} ms "
                f"| {1000 * r['ttft_p99_s']:.1f} ms | {r['prefix_cache_hit_ratio']:.1%} "
                f"| {r['wall_s']:.1f} s | {r.get('requests_per_s', 0):.1f} | {spilled} | {split} |"
            )
    return lines


def markdown(report: dict[str, Any]) -> str:
    pool = report.get("pool") or {}
    head = [
        f"{report.get('label', '')} {report.get('gpu', '')}".strip(),
        f"versions: {report.get('versions')}; pool ready after {pool.get('ready_after_s')} s "
        f"(reused: {pool.get('reused')}); engines: {pool.get('engines')}",
        "",
    ]
    parts = [
        hit_miss(report),
        [""],
        overhead(report),
        [""],
        overhead(report, "overhead_speculative"),
        [""],
        affinity(report),
    ]
    return "\n".join(head + [line for part in parts for line in part])


def main() -> None:
    print(markdown(json.loads(Path(sys.argv[1]).read_text())))


if __name__ == "__main__":
    main()
