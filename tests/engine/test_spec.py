"""EngineSpec -> vLLM command line and environment."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from engine.spec import CPU_DEFAULTS, ENTRY_MODULE, EngineSpec

FULL_GPU = EngineSpec(
    model="/models/llama-awq",
    served_model_name="llama",
    host="0.0.0.0",
    port=8001,
    device="gpu",
    quantization="awq_marlin",
    dtype="half",
    enable_prefix_caching=False,
    gpu_memory_utilization=0.85,
    max_model_len=4096,
    max_num_seqs=64,
    max_num_batched_tokens=8192,
    kv_cache_dtype="fp8",
    enable_chunked_prefill=True,
    tensor_parallel_size=2,
    enforce_eager=True,
    speculative_config={"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 4},
    extra_args=["--disable-log-stats"],
)


def flag_value(argv: list[str], flag: str) -> str:
    assert argv.count(flag) == 1, f"{flag} should appear once in {argv}"
    return argv[argv.index(flag) + 1]


def test_minimal_cpu_spec_is_exact() -> None:
    spec = EngineSpec(model="/m", port=9000)
    assert spec.argv("/py") == [
        "/py",
        "-m",
        ENTRY_MODULE,
        "--model",
        "/m",
        "--host",
        "127.0.0.1",
        "--port",
        "9000",
        "--dtype",
        "auto",
        "--enable-prefix-caching",
    ]
    assert spec.env() == {
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def test_argv_starts_with_the_given_interpreter_by_default_this_one() -> None:
    assert EngineSpec(model="m").argv()[:3] == [sys.executable, "-m", ENTRY_MODULE]


def test_every_field_maps_to_its_flag() -> None:
    argv = FULL_GPU.argv("/py")
    assert flag_value(argv, "--model") == "/models/llama-awq"
    assert flag_value(argv, "--served-model-name") == "llama"
    assert flag_value(argv, "--host") == "0.0.0.0"
    assert flag_value(argv, "--port") == "8001"
    assert flag_value(argv, "--quantization") == "awq_marlin"
    assert flag_value(argv, "--dtype") == "half"
    assert flag_value(argv, "--gpu-memory-utilization") == "0.85"
    assert flag_value(argv, "--max-model-len") == "4096"
    assert flag_value(argv, "--max-num-seqs") == "64"
    assert flag_value(argv, "--max-num-batched-tokens") == "8192"
    assert flag_value(argv, "--kv-cache-dtype") == "fp8"
    assert flag_value(argv, "--tensor-parallel-size") == "2"
    assert json.loads(flag_value(argv, "--speculative-config")) == FULL_GPU.speculative_config
    assert "--no-enable-prefix-caching" in argv and "--enable-prefix-caching" not in argv
    assert "--enable-chunked-prefill" in argv and "--enforce-eager" in argv
    assert argv[-1] == "--disable-log-stats"


def test_booleans_are_explicit_only_where_needed() -> None:
    base = EngineSpec(model="m")
    assert "--enable-prefix-caching" in base.argv()
    assert not any("chunked" in a or "eager" in a for a in base.argv())
    off = EngineSpec(model="m", enable_chunked_prefill=False).argv()
    assert "--no-enable-chunked-prefill" in off and "--enable-chunked-prefill" not in off


def test_memory_knobs_follow_the_device() -> None:
    cpu = EngineSpec(model="m", device="cpu", cpu_kvcache_space_gib=3)
    gpu = EngineSpec(model="m", device="gpu", cpu_kvcache_space_gib=3)
    assert cpu.env()["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert "--gpu-memory-utilization" not in cpu.argv()
    assert "VLLM_CPU_KVCACHE_SPACE" not in gpu.env()
    assert flag_value(gpu.argv(), "--gpu-memory-utilization") == "0.9"


def test_offline_can_be_turned_off_for_hub_models() -> None:
    env = EngineSpec(model="org/name", offline=False).env()
    assert "HF_HUB_OFFLINE" not in env and env["VLLM_NO_USAGE_STATS"] == "1"


def test_cpu_defaults_apply_and_none_keeps_them() -> None:
    spec = EngineSpec.for_device("cpu", model="m", max_model_len=None, max_num_seqs=4)
    for name, value in CPU_DEFAULTS.items():
        assert getattr(spec, name) == value
    assert spec.max_num_seqs == 4
    assert EngineSpec.for_device("cpu", model="m", enforce_eager=False).enforce_eager is False
    gpu = EngineSpec.for_device("gpu", model="m")
    assert gpu.enforce_eager is False and gpu.max_model_len is None


def test_name_and_url() -> None:
    assert EngineSpec(model="/a/b", port=1234).name == "/a/b"
    spec = EngineSpec(model="/a/b", served_model_name="b", port=1234)
    assert (spec.name, spec.url) == ("b", "http://127.0.0.1:1234")


@pytest.mark.parametrize(
    "bad",
    [
        {"port": 0},
        {"port": 70000},
        {"gpu_memory_utilization": 1.5},
        {"tensor_parallel_size": 0},
        {"device": "tpu"},
        {"max_num_seqs": 0},
        {"no_such_flag": 1},
    ],
)
def test_invalid_specs_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        EngineSpec(model="m", **bad)  # type: ignore[arg-type]


PARSE_WITH_VLLM = """
import json, sys
try:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
except ImportError:  # older vLLM releases
    from vllm.entrypoints.openai.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser
args = make_arg_parser(FlexibleArgumentParser()).parse_args(json.loads(sys.argv[1]))
print("PARSED=" + json.dumps(vars(args), default=str))
"""


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM not installed")
def test_installed_vllm_parses_the_command_line_as_meant() -> None:
    """The real vLLM argument parser reads every flag back to the intended value."""
    result = subprocess.run(
        [sys.executable, "-c", PARSE_WITH_VLLM, json.dumps(FULL_GPU.argv()[3:])],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("PARSED="))
    parsed = json.loads(line.removeprefix("PARSED="))
    expected = {
        "model": "/models/llama-awq",
        "served_model_name": ["llama"],
        "host": "0.0.0.0",
        "port": 8001,
        "quantization": "awq_marlin",
        "dtype": "half",
        "enable_prefix_caching": False,
        "gpu_memory_utilization": 0.85,
        "max_model_len": 4096,
        "max_num_seqs": 64,
        "max_num_batched_tokens": 8192,
        "kv_cache_dtype": "fp8",
        "enable_chunked_prefill": True,
        "tensor_parallel_size": 2,
        "enforce_eager": True,
        "disable_log_stats": True,
    }
    assert {key: parsed[key] for key in expected} == expected
    spec_cfg = parsed["speculative_config"]
    spec_cfg = json.loads(spec_cfg) if isinstance(spec_cfg, str) else spec_cfg
    assert spec_cfg == FULL_GPU.speculative_config
