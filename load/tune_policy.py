"""Fits the consensus policy's verifier (gateway/cache/decision.py) on the TUNE split only.

    python -m load.banking77 split data/b77              # seed.csv, tune.csv, report.csv
    python -m load.tune_policy fit --seed data/b77/seed.csv --queries data/b77/tune.csv
    python -m load.tune_policy curve --seed data/b77/seed.csv --queries data/b77/report.csv \\
        --png docs/bench/policy_curve.png

``fit`` seeds a fresh in-process cache (the real embedder) exactly as ``gateway cache eval``
does, fetches each query's neighbours with the store search a lookup makes, fits a logistic
model (Newton's method, numpy) that predicts whether the winning answer is the query's
category, and picks the lowest cut whose false hits on these queries are at most those of the
0.95 threshold. It prints the ``Verifier(...)`` to paste into decision.py.

``curve`` describes (never tunes) both policies on a query set: hit rate against false-hit rate
for thresholds 0.80-0.99 and for verifier cuts, as JSON and optionally a PNG.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from gateway.cache.config import CacheConfig
from gateway.cache.control import CacheControl
from gateway.cache.decision import (
    DEFAULT_VERIFIER,
    FEATURES,
    ConsensusPolicy,
    HitPolicy,
    ThresholdPolicy,
    Verifier,
    neighbourhood,
)
from gateway.cache.entry import Neighbour
from gateway.cache.evaluate import (
    EVAL_TENANT,
    Labelled,
    chat_body,
    eval_config,
    read_labelled,
    seed_cache,
)
from gateway.cache.factory import build_cache
from load.report import emit

BASE_THRESHOLD = 0.95


@dataclass(frozen=True, slots=True)
class Query:
    category: str
    neighbours: list[Neighbour]  # best first, >= the policy's floor, at most its k


async def collect(
    seed: Sequence[Labelled], queries: Sequence[Labelled], k: int, floor: float
) -> list[Query]:
    """Each query's neighbours, from the same store search a lookup makes."""
    config = eval_config(CacheConfig(), len(seed))
    async with build_cache(config) as cache:
        with tqdm(total=len(seed), desc="seeding", file=sys.stderr) as bar:
            await seed_cache(cache, seed, bar.update)
        found = []
        for row in tqdm(queries, desc="searching", file=sys.stderr):
            q = cache.query("chat", chat_body(row.text), EVAL_TENANT, CacheControl())
            assert q is not None
            embedding = await cache.embedder.embed_query(q.text)
            neighbours = await cache.store.search(q.scope, embedding.vector, k, floor)
            found.append(Query(row.category, neighbours))
    return found


def outcome(policy: HitPolicy, queries: Sequence[Query]) -> tuple[int, int]:
    """(hits, false hits) of a policy on the collected neighbours."""
    hits = false = 0
    for query in queries:
        chosen = policy.choose(query.neighbours, BASE_THRESHOLD)
        if chosen is not None:
            hits += 1
            false += chosen.entry.answer.text != query.category
    return hits, false


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3) -> tuple[np.ndarray, float]:
    """Weights and bias of an L2-regularised logistic regression (Newton's method)."""
    design = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(design.shape[1])
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-design @ w))
        gradient = design.T @ (p - y) + l2 * w
        hessian = (design * (p * (1 - p))[:, None]).T @ design + l2 * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return w[:-1], float(w[-1])


def fit(queries: Sequence[Query], base: ConsensusPolicy) -> tuple[Verifier, dict[str, Any]]:
    rows, labels = [], []
    for query in queries:
        hood = neighbourhood(query.neighbours, k=base.k, floor=base.floor, tau=base.tau)
        if hood is not None and hood.votes >= base.min_votes:
            rows.append(hood.features)
            labels.append(float(hood.winner.entry.answer.text == query.category))
    weights, bias = fit_logistic(np.array(rows), np.array(labels))
    weights, bias = np.round(weights, 3), round(bias, 3)
    threshold_hits, cap = outcome(ThresholdPolicy(), queries)
    scores = sorted({round(float(np.dot(weights, r)) + bias, 3) for r in rows})
    best: tuple[int, int, float] | None = None
    for cut in tqdm(scores[:: max(1, len(scores) // 400)], desc="cuts", file=sys.stderr):
        verifier = Verifier(tuple(float(w) for w in weights), bias, cut)
        hits, false = outcome(_with(base, verifier), queries)
        if false <= cap and (best is None or hits > best[0]):
            best = (hits, false, cut)
    assert best is not None, "no cut keeps false hits at the threshold's level"
    verifier = Verifier(tuple(float(w) for w in weights), bias, best[2])
    n = len(queries)
    report = {
        "features": FEATURES,
        "verifier": {"weights": verifier.weights, "bias": bias, "min_score": best[2]},
        "queries": n,
        "training_rows": len(rows),
        "threshold": {"hit_rate": threshold_hits / n, "false_hit_rate": cap / n, "false_hits": cap},
        "consensus": {
            "hit_rate": best[0] / n,
            "false_hit_rate": best[1] / n,
            "false_hits": best[1],
        },
    }
    return verifier, report


def _with(base: ConsensusPolicy, verifier: Verifier) -> ConsensusPolicy:
    return ConsensusPolicy(base.k, base.floor, base.tau, base.min_votes, base.outvoted_by, verifier)


def curve(queries: Sequence[Query], base: ConsensusPolicy) -> dict[str, list[dict[str, float]]]:
    n = len(queries)
    thresholds = []
    for t in np.arange(0.80, 0.995, 0.01):
        hits = false = 0
        for query in queries:
            chosen = ThresholdPolicy().choose(query.neighbours, float(t))
            if chosen is not None:
                hits += 1
                false += chosen.entry.answer.text != query.category
        thresholds.append(
            {"threshold": round(float(t), 2), "hit_rate": hits / n, "false_hit_rate": false / n}
        )
    cuts = []
    v = base.verifier
    for delta in np.arange(-3.0, 3.01, 0.25):
        cut = round(v.min_score + float(delta), 3)
        hits, false = outcome(_with(base, Verifier(v.weights, v.bias, cut)), queries)
        cuts.append({"min_score": cut, "hit_rate": hits / n, "false_hit_rate": false / n})
    return {"threshold": thresholds, "consensus": cuts}


def plot(data: dict[str, list[dict[str, float]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, key, marker in (("threshold", "threshold", "o"), ("consensus", "min_score", "s")):
        points = data[name]
        ax.plot(
            [100 * p["false_hit_rate"] for p in points],
            [100 * p["hit_rate"] for p in points],
            marker=marker,
            markersize=3,
            label=f"{name} (sweep of {key})",
        )
    chosen = [p for p in data["consensus"] if p["min_score"] == DEFAULT_VERIFIER.min_score]
    if chosen:
        ax.scatter(
            [100 * chosen[0]["false_hit_rate"]],
            [100 * chosen[0]["hit_rate"]],
            color="tab:red",
            zorder=3,
            label=f"consensus, fitted cut {DEFAULT_VERIFIER.min_score}",
        )
    default = next(p for p in data["threshold"] if p["threshold"] == BASE_THRESHOLD)
    ax.scatter(
        [100 * default["false_hit_rate"]],
        [100 * default["hit_rate"]],
        color="k",
        zorder=3,
        label="threshold 0.95 (default)",
    )
    ax.set_xlabel("false-hit rate (% of queries)")
    ax.set_ylabel("hit rate (% of queries)")
    ax.set_xlim(0, 2.0)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m load.tune_policy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("fit", "curve"):
        cmd = commands.add_parser(name)
        cmd.add_argument("--seed", type=Path, required=True)
        cmd.add_argument("--queries", type=Path, required=True)
        cmd.add_argument("--json", type=Path, help="also write the result here")
        if name == "curve":
            cmd.add_argument("--png", type=Path)
    args = parser.parse_args(argv)
    base = ConsensusPolicy(verifier=DEFAULT_VERIFIER)
    queries = asyncio.run(
        collect(read_labelled(args.seed), read_labelled(args.queries), base.k, base.floor)
    )
    result: dict[str, Any]
    if args.command == "fit":
        verifier, result = fit(queries, base)
        emit(result, args.json)
        print(f"DEFAULT_VERIFIER = {verifier!r}")
    else:
        result = curve(queries, base)
        emit(result, args.json)
        if args.png:
            plot(result, args.png, f"Hit policies on {args.queries.name} (seeds: {args.seed.name})")


if __name__ == "__main__":
    main()
