"""`python -m gateway cache eval` on small labelled CSVs (real embedder, in a subprocess)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[2]

SEED = [
    ("How do I reset my password?", "password"),
    ("How do I change my email address?", "email"),
    ("Where is my card?", "card_arrival"),
    ("What is the exchange rate today?", "exchange_rate"),
]
QUERIES = [
    ("How do I reset my password?", "password"),  # exact hit
    ("how do i change my email address", "email"),  # semantic hit (cosine ~1)
    ("HOW DO I RESET MY PASSWORD", "email"),  # semantic hit with another category: false hit
    ("What's the weather like in Paris tomorrow?", "weather"),  # miss
    ("Can I open a joint account with my partner?", "joint_account"),  # miss
]


def write(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "category"])
        writer.writerows(rows)
    return path


def run_eval(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    seed, queries = write(tmp_path / "seed.csv", SEED), write(tmp_path / "queries.csv", QUERIES)
    cmd = [sys.executable, "-m", "gateway", "cache", "eval", "--seed", str(seed)]
    cmd += ["--queries", str(queries), *extra]
    # No GATEWAY_* settings leak in: the evaluation must not depend on the caller's env.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_json_line_has_the_rates(tmp_path: Path) -> None:
    done = run_eval(tmp_path, "--json")
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    summary = json.loads(last)
    assert list(summary)[:2] == ["hit_rate", "false_hit_rate"]
    assert summary["hit_rate"] == 3 / 5
    assert summary["false_hit_rate"] == 1 / 5
    assert (summary["exact_hits"], summary["semantic_hits"]) == (1, 2)
    assert summary["queries"] == 5 and summary["seeds"] == 4
    assert summary["policy"] == "consensus"  # the default
    assert summary["latency_ms"]["p50"] > 0


def test_text_report_without_json(tmp_path: Path) -> None:
    done = run_eval(tmp_path, "--policy", "consensus", "--threshold", "0.97")
    assert done.returncode == 0, done.stderr
    assert "hit rate" in done.stdout and "false-hit rate" in done.stdout
    assert "policy consensus (threshold 0.97, guard on)" in done.stdout
    assert not done.stdout.strip().splitlines()[-1].startswith("{")


def test_a_csv_without_the_columns_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("question,label\nhi,greeting\n")
    cmd = [sys.executable, "-m", "gateway", "cache", "eval", "--seed", str(bad)]
    done = subprocess.run(
        [*cmd, "--queries", str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert "text,category" in done.stderr


def test_insert_misses_stores_each_miss_with_an_answer_of_its_own(tmp_path: Path) -> None:
    seed = write(tmp_path / "seed.csv", SEED)
    queries = write(
        tmp_path / "queries.csv",
        [
            ("Can I open a joint account with my partner?", "joint_account"),  # miss, stored
            ("can i open a joint account with my partner", "joint_account"),  # hits it
            ("CAN I OPEN A JOINT ACCOUNT WITH MY PARTNER", "savings"),  # hits it: false
        ],
    )
    cmd = [sys.executable, "-m", "gateway", "cache", "eval", "--seed", str(seed)]
    cmd += ["--queries", str(queries), "--insert-misses", "--json"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["insert_misses"] is True
    assert (summary["hits"], summary["false_hits"]) == (2, 1)
    assert "misses stored as they come" in done.stdout


def test_the_guard_shows_its_effect(tmp_path: Path) -> None:
    seed = write(tmp_path / "seed.csv", [("Is contactless payment enabled on my card?", "on")])
    queries = write(tmp_path / "q.csv", [("Is contactless payment disabled on my card?", "off")])
    cmd = [sys.executable, "-m", "gateway", "cache", "eval", "--seed", str(seed)]
    cmd += ["--queries", str(queries), "--json"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "HF_HUB_OFFLINE": "1"}
    summaries = {}
    for extra in ([], ["--no-guard"]):
        done = subprocess.run(
            cmd + extra, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        summaries[bool(extra)] = json.loads(done.stdout.strip().splitlines()[-1])
    guarded, unguarded = summaries[False], summaries[True]
    assert (unguarded["hits"], unguarded["false_hits"], unguarded["guard"]) == (1, 1, False)
    assert (guarded["hits"], guarded["guard_refusals"]) == (0, {"opposite": 1})


def test_the_same_evaluation_over_redis(tmp_path: Path, redis_server: str) -> None:
    """--redis-url: the same seeds and queries on the Redis store give the same outcome, and
    its keys are flushed after."""
    done = run_eval(tmp_path, "--json", "--redis-url", redis_server)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["hits"], summary["false_hits"], summary["seeds"]) == (3, 1, 4)
    assert (summary["exact_hits"], summary["semantic_hits"]) == (1, 2)
    assert not list(redis.Redis.from_url(redis_server).scan_iter(match="eval*"))
