"""Banking77 (train.csv) as labelled queries, and the deterministic split used for cache quality.

The split (``python -m load.banking77 split OUT_DIR``) writes three CSVs in Banking77 format
(``text,category``), all from train.csv, nothing tuned on ``report``:

- ``seed.csv``: what is in the cache. Half of the texts of each *seen* intent (57 intents).
- ``tune.csv``: queries to tune a hit policy on. A quarter of the texts of each seen intent,
  plus every text of 10 *unseen* intents (never seeded: every hit on them is a false hit).
- ``report.csv``: held-out queries for the reported numbers. The last quarter of each seen
  intent, plus every text of 10 other unseen intents.

The warmed-FAQ case (every intent in the cache) is a second split of the same file:

- ``faq-seed.csv``: 80 % of the texts of every intent (77 intents): the warmed FAQ.
- ``faq-tune.csv`` / ``faq-report.csv``: the other 20 % of each intent, halved: queries to tune
  on, and held-out queries for the reported numbers.

Everything is decided by SHA-256 of a salt and the intent or text, so the split does not depend
on the file's order or on a random generator's version. Texts are normalised as the cache keys
them and duplicates dropped (a text that appears under two intents is dropped entirely), so no
query is an exact copy of a seed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.cache.evaluate import Labelled, read_labelled

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CSV = ROOT.parent / "shared" / "data" / "banking77" / "train.csv"
SALT = "semcache-banking77-v1"
UNSEEN_PER_SET = 10
SEED_FRACTION, TUNE_FRACTION = 0.50, 0.25
FAQ_HELD_OUT = 0.20


def write_labelled(path: Path, rows: Iterable[Labelled]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "category"])
        for row in rows:
            writer.writerow([row.text, row.category])
            count += 1
    return count


def unique(rows: Sequence[Labelled]) -> list[Labelled]:
    """Drops repeated texts; a text labelled with two intents is dropped altogether."""
    labels: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        labels[row.text].add(row.category)
    seen: set[str] = set()
    kept = []
    for row in rows:
        if len(labels[row.text]) == 1 and row.text not in seen:
            seen.add(row.text)
            kept.append(row)
    return kept


def by_intent(rows: Iterable[Labelled]) -> dict[str, list[Labelled]]:
    groups: dict[str, list[Labelled]] = defaultdict(list)
    for row in rows:
        groups[row.category].append(row)
    return dict(groups)


def _rank(value: str) -> str:
    return hashlib.sha256(f"{SALT}:{value}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Split:
    seed: list[Labelled]
    tune: list[Labelled]
    report: list[Labelled]
    unseen_tune: list[str]
    unseen_report: list[str]

    def summary(self) -> dict[str, object]:
        def seen_share(rows: list[Labelled], unseen: list[str]) -> int:
            return sum(1 for r in rows if r.category not in unseen)

        return {
            "salt": SALT,
            "seed": len(self.seed),
            "seed_intents": len({r.category for r in self.seed}),
            "tune": len(self.tune),
            "tune_seen_intent_queries": seen_share(self.tune, self.unseen_tune),
            "report": len(self.report),
            "report_seen_intent_queries": seen_share(self.report, self.unseen_report),
            "unseen_tune_intents": self.unseen_tune,
            "unseen_report_intents": self.unseen_report,
        }


def split(rows: Sequence[Labelled]) -> Split:
    groups = by_intent(unique(rows))
    intents = sorted(groups, key=_rank)
    unseen_tune = sorted(intents[:UNSEEN_PER_SET])
    unseen_report = sorted(intents[UNSEEN_PER_SET : 2 * UNSEEN_PER_SET])
    seed: list[Labelled] = []
    tune: list[Labelled] = []
    report: list[Labelled] = []
    for intent in sorted(groups):
        texts = sorted(groups[intent], key=lambda row: _rank(row.text))
        if intent in unseen_tune:
            tune += texts
        elif intent in unseen_report:
            report += texts
        else:
            a = round(len(texts) * SEED_FRACTION)
            b = a + round(len(texts) * TUNE_FRACTION)
            seed += texts[:a]
            tune += texts[a:b]
            report += texts[b:]
    return Split(seed, tune, report, unseen_tune, unseen_report)


def faq_split(rows: Sequence[Labelled]) -> tuple[list[Labelled], list[Labelled], list[Labelled]]:
    """(seed, tune, report) of the warmed-FAQ case: every intent seeded."""
    seed: list[Labelled] = []
    tune: list[Labelled] = []
    report: list[Labelled] = []
    for _, group in sorted(by_intent(unique(rows)).items()):
        texts = sorted(group, key=lambda row: _rank(f"faq:{row.text}"))
        held = round(len(texts) * FAQ_HELD_OUT)
        seed += texts[held:]
        tune += texts[: held // 2]
        report += texts[held // 2 : held]
    return seed, tune, report


def write_split(out_dir: Path, source: Path = DEFAULT_CSV) -> Split:
    rows = read_labelled(source)
    for name, part in zip(("faq-seed", "faq-tune", "faq-report"), faq_split(rows), strict=True):
        write_labelled(out_dir / f"{name}.csv", part)
    result = split(rows)
    write_labelled(out_dir / "seed.csv", result.seed)
    write_labelled(out_dir / "tune.csv", result.tune)
    write_labelled(out_dir / "report.csv", result.report)
    (out_dir / "split.json").write_text(json.dumps(result.summary(), indent=2) + "\n")
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m load.banking77", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser(
        "split", help="write seed.csv, tune.csv, report.csv, split.json and faq-*.csv"
    )
    cmd.add_argument("out_dir", type=Path)
    cmd.add_argument("--source", type=Path, default=DEFAULT_CSV)
    args = parser.parse_args(argv)
    result = write_split(args.out_dir, args.source)
    print(json.dumps(result.summary(), indent=2))


if __name__ == "__main__":
    main()
