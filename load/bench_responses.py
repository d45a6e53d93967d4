"""Responses API through the gateway: cache miss vs exact hit, JSON and stream, and the same
requests straight to the engine.

    python -m load.bench_responses --gateway http://127.0.0.1:8080 --engine http://127.0.0.1:8001

Against running processes (a gateway in front of one real engine). One request at a time. Each
round asks a Banking77 question never asked before (a real miss: exact tier, embedding, vector
search, routing, relay; asked for one short sentence, ``max_output_tokens`` 48, temperature 0;
a round whose answer ran out of tokens is not stored, so it is skipped), then the same request again
(an exact hit), then the same request straight to the engine. JSON rounds measure latency;
stream rounds also the time to the first ``response.output_text.delta`` event.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import Any

import httpx

from load.banking77 import DEFAULT_CSV, read_labelled
from load.stats import loadavg, summary_ms


def _timed(client: httpx.Client, url: str, body: dict[str, Any]) -> tuple[float, float, str]:
    """(seconds to the end, seconds to the first text delta, x-cache)."""
    started = time.perf_counter()
    first = 0.0
    with client.stream("POST", f"{url}/v1/responses", json=body) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            if not first and line.startswith("data:") and "output_text.delta" in line:
                first = time.perf_counter() - started
        if not body.get("stream"):
            first = time.perf_counter() - started
    return time.perf_counter() - started, first, reply.headers.get("x-cache", "")


def run(gateway: str, engine: str, model: str, rounds: int) -> dict[str, Any]:
    questions = [row.text for row in read_labelled(DEFAULT_CSV)][7 : 7 + 2 * rounds]
    namespace = uuid.uuid4().hex
    found: dict[str, Any] = {"rounds": rounds, "loadavg_before": loadavg()}
    with httpx.Client(timeout=120) as client:
        for mode, stream in (("json", False), ("stream", True)):
            times: dict[str, list[float]] = {"miss": [], "hit": [], "engine": []}
            ttft: dict[str, list[float]] = {"miss": [], "hit": [], "engine": []}
            asked = questions[:rounds] if not stream else questions[rounds:]
            skipped = 0
            for question in asked:
                body = {
                    "model": model,
                    "instructions": "Answer in one short sentence.",
                    "input": question,
                    "max_output_tokens": 48,
                    "temperature": 0,
                    "stream": stream,
                    "cache": {"namespace": namespace},
                }
                measured: dict[str, tuple[float, float]] = {}
                for side, url in (("miss", gateway), ("hit", gateway), ("engine", engine)):
                    sent = (
                        body
                        if side != "engine"
                        else {k: v for k, v in body.items() if k != "cache"}
                    )
                    total, first, cache = _timed(client, url, sent)
                    if side == "hit" and not cache.startswith("hit"):
                        time.sleep(0.05)  # the insert lands just after the answer: once more
                        total, first, cache = _timed(client, url, sent)
                    expected = {"miss": "miss", "hit": "hit-exact", "engine": ""}[side]
                    if cache != expected:  # e.g. a question close to an earlier one: a hit
                        break
                    measured[side] = (total, first)
                if len(measured) < 3:
                    skipped += 1
                    continue
                for side, (total, first) in measured.items():
                    times[side].append(total)
                    ttft[side].append(first)
            found[mode] = {side: summary_ms(values) for side, values in times.items()}
            found[mode]["rounds_skipped"] = skipped  # the "miss" was served by the cache
            if stream:
                found[mode]["ttft"] = {side: summary_ms(values) for side, values in ttft.items()}
    found["loadavg_after"] = loadavg()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gateway", default="http://127.0.0.1:8080")
    parser.add_argument("--engine", required=True)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args()
    result = run(args.gateway.rstrip("/"), args.engine.rstrip("/"), args.model, args.rounds)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as out:
            out.write(text + "\n")


if __name__ == "__main__":
    main()
