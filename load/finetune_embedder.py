"""Experiment (issue 13): a cheap contrastive fine-tune of all-MiniLM-L6-v2 on answer groups.

Entries of a labelled CSV (``text,category``) that share a category share an answer; the top
``--layers`` transformer layers of the embedder are trained so that entries of one group lie close
and entries of different groups apart (supervised contrastive loss, in-batch negatives, batches of
``--classes`` groups x ``--per-class`` entries). Cheap on a 2-core CPU: the token embeddings and the
lower layers stay frozen and their output is computed once per text (dynamic padding, no padding
to 256); only the top layers run forward and backward at each step.

The result is a sentence-transformers folder that the gateway loads as its embedder
(``cache.embedder.model_path``), so the real hit decision can be measured on it::

    nice -n 10 python -m load.finetune_embedder --train data/b77/faq-seed.csv \\
        --out data/ft/faq --screen data/b77/faq-tune.csv
    GATEWAY_CACHE__EMBEDDER__MODEL_PATH=data/ft/faq python -m gateway cache eval \\
        --seed data/b77/faq-seed.csv --queries data/b77/faq-tune.csv --json

``--screen Q.csv`` prints a first look before and after training (numpy, nearest seed at a cosine
threshold: hit rate and false-hit rate over the queries), not the gateway's decision.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np


def read_labelled(path: Path) -> tuple[list[str], list[str]]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["category"] for r in rows]


class FrozenBase:
    """The model with its lower layers' outputs cached once per text."""

    def __init__(self, model_path: Path, layers: int, threads: int) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self.torch = torch
        self.st: Any = SentenceTransformer(str(model_path), device="cpu")
        bert: Any = self.st[0].auto_model
        self.bert = bert
        self.tokenizer = self.st.tokenizer
        self.max_len = int(self.st.max_seq_length or 256)
        n = len(bert.encoder.layer)
        self.cut = n - layers  # layers[cut:] are trained
        for p in bert.parameters():
            p.requires_grad_(False)
        for layer in bert.encoder.layer[self.cut :]:
            for p in layer.parameters():
                p.requires_grad_(True)
        self._cache: dict[str, Any] = {}

    def lower(self, texts: list[str], batch: int = 64) -> None:
        """Run the frozen part once for each new text (sorted by length: little padding)."""
        torch = self.torch
        todo = sorted({t for t in texts if t not in self._cache}, key=len)
        self.bert.eval()
        with torch.no_grad():
            for i in range(0, len(todo), batch):
                chunk = todo[i : i + batch]
                enc = self.tokenizer(
                    chunk,
                    padding=True,
                    truncation=True,
                    max_length=self.max_len,
                    return_tensors="pt",
                )
                out = self.bert(**enc, output_hidden_states=True)
                hidden = out.hidden_states[self.cut]
                for j, text in enumerate(chunk):
                    m = int(enc["attention_mask"][j].sum())
                    self._cache[text] = hidden[j, :m].clone()

    def top(self, texts: list[str]):
        """Unit-length sentence vectors through the trained layers (with grad if enabled)."""
        torch = self.torch
        from transformers.masking_utils import create_bidirectional_mask

        parts = [self._cache[t] for t in texts]
        length = max(p.shape[0] for p in parts)
        hidden = torch.zeros(len(parts), length, parts[0].shape[1])
        mask = torch.zeros(len(parts), length, dtype=torch.long)
        for i, p in enumerate(parts):
            hidden[i, : p.shape[0]] = p
            mask[i, : p.shape[0]] = 1
        mask4d = create_bidirectional_mask(
            config=self.bert.config, inputs_embeds=hidden, attention_mask=mask
        )
        for layer in self.bert.encoder.layer[self.cut :]:
            out = layer(hidden, attention_mask=mask4d)
            hidden = out[0] if isinstance(out, tuple) else out
        w = mask.unsqueeze(-1).float()
        pooled = (hidden * w).sum(1) / w.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def encode(self, texts: list[str], batch: int = 256) -> np.ndarray:
        self.lower(texts)
        self.bert.eval()
        out = []
        with self.torch.no_grad():
            order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
            vecs = np.zeros((len(texts), self.bert.config.hidden_size), dtype=np.float32)
            for i in range(0, len(order), batch):
                idx = order[i : i + batch]
                vecs[idx] = self.top([texts[k] for k in idx]).numpy()
            out.append(vecs)
        return out[0]


def supcon(z, labels, tau: float):
    """Supervised contrastive loss (Khosla et al. 2020) over one batch of unit vectors."""
    import torch

    sim = z @ z.T / tau
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.bool)
    sim = sim.masked_fill(eye, float("-inf"))
    logp = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    count = pos.sum(1)
    keep = count > 0
    loss = -(logp.masked_fill(~pos, 0).sum(1)[keep] / count[keep])
    return loss.mean()


def batches(labels: list[str], classes: int, per_class: int, rng: random.Random):
    """One epoch of P x K batches: each group's entries shuffled and dealt out in chunks of K."""
    by: dict[str, list[int]] = {}
    for i, c in enumerate(labels):
        by.setdefault(c, []).append(i)
    chunks = []
    for idx in by.values():
        rng.shuffle(idx)
        chunks += [
            idx[i : i + per_class]
            for i in range(0, len(idx), per_class)
            if len(idx[i : i + per_class]) >= 2
        ]
    rng.shuffle(chunks)
    # Deal chunks into batches of up to `classes` chunks of distinct groups.
    out: list[list[int]] = []
    pending = list(chunks)
    while pending:
        batch: list[int] = []
        seen: set[str] = set()
        rest: list[list[int]] = []
        for ch in pending:
            c = labels[ch[0]]
            if len(seen) < classes and c not in seen:
                seen.add(c)
                batch += ch
            else:
                rest.append(ch)
        out.append(batch)
        pending = rest
    return out


def screen(seed_vecs, seed_labels, q_vecs, q_labels, thresholds) -> list[dict]:
    """Nearest seed at a cosine threshold: hit rate and false-hit rate over all queries."""
    sims = q_vecs @ seed_vecs.T
    best = sims.argmax(1)
    cos = sims[np.arange(len(q_vecs)), best]
    wrong = np.array([seed_labels[b] != q for b, q in zip(best, q_labels, strict=True)])
    rows = []
    for t in thresholds:
        hit = cos >= t
        rows.append(
            {
                "t": round(float(t), 3),
                "hit": float(hit.mean()),
                "false": float((hit & wrong).mean()),
            }
        )
    return rows


def best_at(rows: list[dict], max_false: float) -> dict | None:
    ok = [r for r in rows if r["false"] <= max_false]
    return max(ok, key=lambda r: r["hit"]) if ok else None


def curve_main(argv: list[str]) -> int:
    """Both hit policies over their cuts with a given embedder folder (no guard applied)."""
    import asyncio

    parser = argparse.ArgumentParser(prog="python -m load.finetune_embedder curve")
    parser.add_argument("--model-path", type=Path, default=None)
    parser.add_argument("--seed", type=Path, required=True)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import load.tune_policy as tp
    from gateway.cache.config import CacheConfig, EmbedderConfig
    from gateway.cache.decision import DEFAULT_VERIFIER, ConsensusPolicy, ThresholdPolicy, Verifier
    from gateway.cache.evaluate import read_labelled as read_rows

    embedder = EmbedderConfig(model_path=args.model_path)
    # collect() builds CacheConfig(): give it this embedder.
    tp.CacheConfig = lambda: CacheConfig(embedder=embedder)  # type: ignore[assignment,misc]
    base = ConsensusPolicy(verifier=DEFAULT_VERIFIER)
    queries = asyncio.run(
        tp.collect(read_rows(args.seed), read_rows(args.queries), base.k, base.floor)
    )
    n = len(queries)
    out: dict = {"model_path": str(args.model_path), "threshold": [], "consensus": []}
    for t in np.arange(0.80, 0.9951, 0.005):
        hits = false = 0
        for q in queries:
            chosen = ThresholdPolicy().choose(q.neighbours, float(t))
            if chosen is not None:
                hits += 1
                false += chosen.entry.answer.text != q.category
        out["threshold"].append({"t": round(float(t), 3), "hit": hits / n, "false": false / n})
    from gateway.cache.decision import neighbourhood

    v = base.verifier
    scores = []
    for q in queries:
        hood = neighbourhood(q.neighbours, k=base.k, floor=base.floor, tau=base.tau)
        if hood is not None and hood.votes >= base.min_votes:
            scores.append(v.score(hood.features))
    scores = sorted(set(np.round(scores, 2).tolist()))
    cuts = sorted(set([*scores[:: max(1, len(scores) // 150)], round(v.min_score, 2)]))
    for cut in cuts:
        pol = tp._with(base, Verifier(v.weights, v.bias, round(float(cut), 3)))
        hits, false = tp.outcome(pol, queries)
        out["consensus"].append({"t": round(float(cut), 3), "hit": hits / n, "false": false / n})
    for name in ("threshold", "consensus"):
        for limit in (0.002, 0.004, 0.01):
            print(f"{name}: best at <= {100 * limit:.1f} % false:", best_at(out[name], limit))
    at = [r for r in out["consensus"] if abs(r["t"] - round(v.min_score, 2)) < 1e-9]
    print(f"consensus at the default cut {v.min_score}:", at)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


def main() -> int:
    import sys

    if sys.argv[1:2] == ["curve"]:
        return curve_main(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=Path, required=True, help="labelled CSV: the groups")
    parser.add_argument("--out", type=Path, required=True, help="sentence-transformers folder")
    parser.add_argument("--model", type=Path, default=None, help="base model; default shipped")
    parser.add_argument("--layers", type=int, default=2, help="top layers trained")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--classes", type=int, default=32, help="groups per batch")
    parser.add_argument("--per-class", type=int, default=8, help="entries per group per batch")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--tau", type=float, default=0.05, help="loss temperature")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--screen", type=Path, default=None, help="labelled queries to screen")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from gateway.cache.encoders import default_model_path

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    texts, labels = read_labelled(args.train)
    base = FrozenBase(args.model or default_model_path(), args.layers, args.threads)
    thresholds = np.arange(0.70, 0.995, 0.01)

    t0 = time.perf_counter()
    base.lower(texts)
    t_cache = time.perf_counter() - t0
    print(f"frozen layers cached for {len(texts)} texts in {t_cache:.1f} s", flush=True)

    q_texts, q_labels = read_labelled(args.screen) if args.screen else ([], [])
    report: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "cache_s": t_cache}
    if args.screen:
        rows = screen(base.encode(texts), labels, base.encode(q_texts), q_labels, thresholds)
        report["screen_before"] = rows
        print("before: best at <=0.4 % false:", best_at(rows, 0.004), flush=True)

    params = [p for p in base.bert.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    label_ids = {c: i for i, c in enumerate(sorted(set(labels)))}
    y_all = torch.tensor([label_ids[c] for c in labels])
    per_epoch = len(batches(labels, args.classes, args.per_class, random.Random(0)))
    steps = max(1, round(args.epochs * per_epoch))
    plan: list[list[int]] = []
    while len(plan) < steps:
        plan += batches(labels, args.classes, args.per_class, rng)
    plan = plan[:steps]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, steps // 10)) * max(0.0, 1 - s / steps)
    )
    t1 = time.perf_counter()
    for step, idx in enumerate(plan):
        base.bert.train()
        z = base.top([texts[i] for i in idx])
        loss = supcon(z, y_all[idx], args.tau)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 10 == 0 or step == steps - 1:
            print(
                f"step {step + 1}/{steps} loss {loss.item():.3f} {time.perf_counter() - t1:.0f} s",
                flush=True,
            )
    t_train = time.perf_counter() - t1
    report["train_s"] = t_train
    report["steps"] = steps
    print(f"trained {steps} steps in {t_train:.1f} s", flush=True)

    if args.screen:
        rows = screen(base.encode(texts), labels, base.encode(q_texts), q_labels, thresholds)
        report["screen_after"] = rows
        print("after: best at <=0.4 % false:", best_at(rows, 0.004), flush=True)

    base.bert.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    base.st.save(str(args.out))
    (args.out / "finetune.json").write_text(json.dumps(report, indent=1))
    print(f"saved {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
