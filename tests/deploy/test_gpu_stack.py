"""The whole-stack GPU benchmark's parts that need no GPU: its pool file, the engine-log facts,
the miss statistics and the markdown report."""

from __future__ import annotations

from pathlib import Path

from engine.pool_config import load_pool_config
from load.client import Reply
from load.engine_pool import log_facts
from load.gpu_stack_report import markdown
from load.miss_overhead import summarise

ROOT = Path(__file__).resolve().parents[2]


def test_pool_file_runs_two_gpu_engines_with_their_own_memory_share() -> None:
    config = load_pool_config(ROOT / "deploy" / "gpu" / "pool-h200-stack.yaml")
    specs = [spec for _, spec in config.engine_specs()]
    assert len(specs) == 2
    assert config.start_concurrency == 1  # vLLM's memory profile assumes a quiet GPU
    assert {spec.device for spec in specs} == {"gpu"}
    assert len({spec.port for spec in specs}) == 2
    for spec in specs:
        argv = spec.argv("python3")
        assert "--gpu-memory-utilization" in argv
        assert argv[argv.index("--num-gpu-blocks-override") + 1] == "4096"
        assert "CUDA_VISIBLE_DEVICES" not in spec.env()  # both share the one GPU


def test_log_facts_reads_vllm_memory_lines(tmp_path: Path) -> None:
    (tmp_path / "awq-a.log").write_text(
        "INFO ... Model loading took 0.1123 GiB memory and 2.4 seconds\n"
        "INFO ... Overriding num_gpu_blocks=120000 with num_gpu_blocks_override=4096\n"
        "INFO ... GPU KV cache size: 65,536 tokens\n"
        "INFO ... Maximum concurrency for 4,096 tokens per request: 16.00x\n"
    )
    (tmp_path / "pool.log").write_text("GPU KV cache size: 1 tokens\n")
    facts = log_facts(tmp_path)
    assert list(facts) == ["awq-a"]
    assert facts["awq-a"]["kv_cache_tokens"] == 65536
    assert facts["awq-a"]["blocks_override"] == 4096
    assert facts["awq-a"]["blocks_fitting"] == 120000
    assert facts["awq-a"]["max_concurrency"] == 16.0


def _reply(
    cache: str, latency: float, ttft: float | None = None, error: str | None = None
) -> Reply:
    return Reply(status=200, cache=cache, latency_s=latency, ttft_s=ttft, error=error)


def test_summarise_keeps_hits_and_errors_out_of_the_miss_numbers() -> None:
    replies = {
        "gateway": [
            _reply("miss", 0.110, 0.030),
            _reply("miss", 0.120, 0.032),
            _reply("hit-semantic", 0.005, 0.004),
            _reply("miss", 9.0, error="HTTP 503"),
        ],
        "engine": [_reply("", 0.100, 0.020), _reply("", 0.104, 0.021)],
    }
    out = summarise(replies, {"gateway": 2.0, "engine": 1.0}, clients=1, stream=True)
    assert out["gateway_x_cache"] == {"miss": 3, "hit-semantic": 1}
    assert out["errors"] == {"gateway": 1, "engine": 0}
    assert out["gateway_latency"]["n"] == 2
    assert out["added_ttft"]["p50_ms"] == 10.0
    assert out["requests_per_s"] == {"gateway": 2.0, "engine": 2.0}


def test_markdown_report_renders_every_section() -> None:
    summary = {"n": 2, "p50_ms": 5.0, "p90_ms": 6.0, "p99_ms": 7.0, "mean_ms": 5.5}
    row = {
        "gateway_x_cache": {"miss": 2},
        "gateway_latency": summary,
        "engine_latency": summary,
        "added_latency": {"p50_ms": 0.0, "p99_ms": 0.0},
        "gateway_ttft": summary,
        "engine_ttft": summary,
        "added_ttft": {"p50_ms": 0.0, "p99_ms": 0.0},
    }
    phase = {
        "strategy": "affinity",
        "requests": 8,
        "ttft_p50_s": 0.01,
        "ttft_p99_s": 0.02,
        "prefix_cache_hit_ratio": 0.5,
        "wall_s": 1.0,
        "engines": {"a": 4, "b": 4},
    }
    report = {
        "gpu": "NVIDIA H200",
        "pool": {"ready_after_s": 1.0},
        "hit_miss": {"exact_1": summary, "semantic_32": summary},
        "overhead": {"json_1": row, "stream_32": row},
        "overhead_speculative": {"stream_1": {**row, "gateway_ttft": {**summary, "p50_ms": 3.0}}},
        "affinity": {
            "fits": {"args": {"sessions": 2, "turns": 2}, "results": [phase]},
        },
    }
    text = markdown(report)
    assert "| exact hit | 5.0 / 7.0 | - / - |" in text
    assert "| 32 | TTFT | 5.0 / 7.0 |" in text
    speculative = text.split("overhead_speculative:", 1)[1]
    assert "| 1 | TTFT | 3.0 / 7.0 |" in speculative
    assert "| fits (2 sessions x 2 turns) | affinity | 8 | 10.0 ms | 20.0 ms | 50.0% |" in text


def test_affinity_variants_parse_into_balancer_settings() -> None:
    from load.bench_affinity import balancer_for

    deep = balancer_for("affinity:prefix_blocks=16,block_chars=128")
    assert (deep.strategy, deep.prefix_blocks, deep.block_chars) == ("affinity", 16, 128)
    assert deep.scrape_metrics is False
    assert balancer_for("round_robin").strategy == "round_robin"


def test_the_stack_drivers_affinity_section_runs_open_loop_and_affinity_wins_under_pressure(
    tmp_path: Path,
) -> None:
    """The GPU run's affinity section end to end, tiny, against two prefix-cache stand-ins
    whose caches hold the conversations one engine sees under affinity but not every
    conversation (round robin): the numbers come from the engines' own counters."""
    import argparse
    import json
    from contextlib import ExitStack

    from load.bench_gpu_stack import affinity_args, run_affinity
    from tests.support.prefix_engine import MODEL as STAND_IN_MODEL
    from tests.support.prefix_engine import running_prefix_engine

    workload = {
        "tiny": {
            "sessions_per_engine": 20,
            "rate_per_engine": 12.0,
            "turns": 3,
            "think_s": 0.2,
            "warmup_s": 0.3,
            "system_words": 40,
            "profile_words": 200,
        }
    }
    out = tmp_path / "stack.json"
    args = argparse.Namespace(
        affinity_workloads=json.dumps(workload),
        affinity_rounds=1,
        strategy=["round_robin", "affinity"],
        system_words=400,
        profile_words=800,
        out=out,
    )
    ns = affinity_args("tiny", workload["tiny"], 2, STAND_IN_MODEL, args)
    assert (ns.sessions, ns.arrival_rate, ns.system_words) == (40, 24.0, 40)
    report: dict[str, object] = {}
    with ExitStack() as stack:
        engines = [stack.enter_context(running_prefix_engine(capacity_blocks=200)) for _ in "ab"]
        run_affinity([e.url for e in engines], STAND_IN_MODEL, args, report)
    saved = json.loads(out.read_text())["affinity"]["tiny"]
    results = {r["strategy"]: r for r in saved["results"]}
    assert set(results) == {"round_robin", "affinity"}
    for r in results.values():
        assert r["errors"] == 0 and 0 < r["requests"] <= 120 and r["requests_per_s"] > 0
    assert results["round_robin"]["route_reasons"] == {
        "round-robin": results["round_robin"]["requests"]
    }
    affinity, rr = results["affinity"], results["round_robin"]
    assert affinity["prefix_cache_hit_ratio"] > 1.15 * rr["prefix_cache_hit_ratio"] > 0
    assert "| tiny (40 sessions x 3 turns, 24/s open loop, think 0.2 s) | affinity |" in markdown(
        {"affinity": {"tiny": saved}}
    )


def test_four_engine_pool_file_shares_the_gpu_beside_the_two_engine_pool() -> None:
    two = load_pool_config(ROOT / "deploy" / "gpu" / "pool-h200-stack.yaml")
    four = load_pool_config(ROOT / "deploy" / "gpu" / "pool-h200-stack4.yaml")
    specs = [spec for _, spec in four.engine_specs()]
    assert len(specs) == 4 and four.start_concurrency == 1
    ports = {spec.port for spec in specs}
    assert len(ports) == 4 and not ports & {spec.port for _, spec in two.engine_specs()}
    assert four.publish_path != two.publish_path and four.log_dir != two.log_dir
    for spec in specs:
        argv = spec.argv("python3")
        assert argv[argv.index("--num-gpu-blocks-override") + 1] == "4096"
    assert sum(float(getattr(spec, "gpu_memory_utilization", 1.0)) for spec in specs) <= 0.9


def test_sizing_model_two_engines_cap_affinitys_gain_below_2x_four_do_not() -> None:
    """The GPU workload's sizing (7 conversations a second per engine) in the LRU model: a
    turn hits where the previous one ran; round robin lands there one time in n."""
    from load.affinity_sizing import Sizing, hit_ratio

    two = Sizing(engines=2, rate=14.0, sessions=280)
    four = Sizing(engines=4, rate=28.0, sessions=560)
    rr2, aff2 = hit_ratio(two, "round_robin"), hit_ratio(two, "affinity")
    rr4, aff4 = hit_ratio(four, "round_robin"), hit_ratio(four, "affinity")
    assert aff2 > 0.7 and aff4 > 0.7  # affinity's share fits each engine's cache
    assert 1.3 < aff2 / rr2 < 2.0
    assert aff4 / rr4 > 2.0
