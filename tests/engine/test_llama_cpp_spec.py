"""The llama.cpp engine kind as data: its command line, pool entries of both kinds, the CLI, and
where the cached build is looked for (nothing here builds or starts anything)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from pydantic import ValidationError

from engine import llama_cpp_build
from engine.cli import main
from engine.kinds import kind_of
from engine.llama_cpp_build import BUILD_VERSION, MARKER, built_binary, cpu_variant
from engine.llama_cpp_spec import LlamaServerSpec
from engine.models import DEFAULT_MODEL_NAME, gguf_path
from engine.pool_config import PoolConfig, PoolLlamaServerSpec
from engine.spec import EngineSpec


def _value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_bundled_gguf_is_served_under_the_default_name() -> None:
    spec = LlamaServerSpec(port=8123, binary="/opt/llama-server")
    argv = spec.argv()
    assert argv[0] == "/opt/llama-server"
    assert _value(argv, "--model") == str(gguf_path())
    assert _value(argv, "--alias") == DEFAULT_MODEL_NAME == spec.name
    assert _value(argv, "--port") == "8123" and spec.url == "http://127.0.0.1:8123"
    assert _value(argv, "--ctx-size") == "2048" and _value(argv, "--parallel") == "4"
    for flag in ("--kv-unified", "--jinja", "--metrics", "--offline", "--no-webui"):
        assert flag in argv
    assert _value(argv, "--threads") == "1" and "--n-gpu-layers" not in argv
    assert spec.env() == {}


def test_an_own_model_without_a_served_name_is_listed_under_its_path() -> None:
    spec = LlamaServerSpec(
        model="/m/q.gguf", threads=2, n_gpu_layers=99, jinja=False, extra_args=["--seed", "1"]
    )
    argv = spec.argv()
    assert spec.name == "/m/q.gguf" == _value(argv, "--alias")
    assert _value(argv, "--threads") == "2" and _value(argv, "--n-gpu-layers") == "99"
    assert "--no-jinja" in argv and argv[-2:] == ["--seed", "1"]


def test_vllm_fields_are_refused() -> None:
    with pytest.raises(ValidationError):
        LlamaServerSpec.model_validate({"quantization": "awq"})


def test_a_pool_mixes_both_kinds_under_one_served_name() -> None:
    config = PoolConfig.model_validate(
        {
            "engines": [
                {"name": "v", "model": "/m/hf", "served_model_name": "smol", "port": 9001},
                {
                    "name": "l",
                    "kind": "llama.cpp",
                    "served_model_name": "smol",
                    "port": 9002,
                    "replicas": 2,
                    "parallel": 2,
                    "env": {"OMP_NUM_THREADS": "1"},
                },
            ]
        }
    )
    specs = dict(config.engine_specs())
    assert list(specs) == ["v", "l-0", "l-1"]
    assert isinstance(specs["v"], EngineSpec) and kind_of(specs["v"]) == "vllm"
    llama = specs["l-1"]
    assert isinstance(llama, PoolLlamaServerSpec) and kind_of(llama) == "llama.cpp"
    assert llama.port == 9003 and llama.parallel == 2 and llama.name == "smol"
    assert llama.env() == {"OMP_NUM_THREADS": "1"}
    assert {spec.name for spec in specs.values()} == {"smol"}


def test_an_unknown_kind_is_an_error() -> None:
    config = PoolConfig.model_validate({"engines": [{"kind": "tgi", "model": "x"}]})
    with pytest.raises(ValueError, match="unknown engine kind 'tgi'"):
        config.engine_specs()


def test_cli_prints_the_llama_server_command(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "serve",
            "--kind",
            "llama.cpp",
            "--print-command",
            "--port",
            "8124",
            "--max-model-len",
            "4096",
            "--max-num-seqs",
            "8",
            "--",
            "--threads",
            "1",
        ]
    )
    assert code == 0
    argv = shlex.split(capsys.readouterr().out.splitlines()[0])
    assert argv[0].endswith("llama-server")
    assert _value(argv, "--model") == str(gguf_path())
    assert _value(argv, "--alias") == DEFAULT_MODEL_NAME
    assert _value(argv, "--ctx-size") == "4096" and _value(argv, "--parallel") == "8"
    assert argv[-2:] == ["--threads", "1"]


def test_cli_refuses_vllm_options_for_llama_cpp(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="--quantization"):
        main(["serve", "--kind", "llama.cpp", "--quantization", "awq", "--print-command"])


def test_a_build_counts_only_with_its_marker(tmp_path: Path) -> None:
    (tmp_path / "llama-server").write_text("#!/bin/sh\n")
    (tmp_path / "llama-server").chmod(0o755)
    assert built_binary(tmp_path) is None  # an interrupted build leaves no marker
    (tmp_path / MARKER).write_text(json.dumps({"build_version": BUILD_VERSION - 1}))
    assert built_binary(tmp_path) is None  # built with older flags
    (tmp_path / MARKER).write_text(json.dumps({"build_version": BUILD_VERSION}))
    assert built_binary(tmp_path) == tmp_path / "llama-server"


def test_llama_server_bin_overrides_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMA_SERVER_BIN", "/usr/local/bin/llama-server")
    assert llama_cpp_build.ensure_llama_server() == Path("/usr/local/bin/llama-server")
    assert LlamaServerSpec().argv()[0] == "/usr/local/bin/llama-server"


def test_the_variant_is_portable_on_avx2_machines() -> None:
    flags = set(Path("/proc/cpuinfo").read_text().split())
    expected = "x86-64-v3" if {"avx2", "fma", "f16c", "bmi2"} <= flags else "native"
    assert cpu_variant() == expected
    assert llama_cpp_build.variant_flags("x86-64-v3") == ["-DGGML_NATIVE=OFF"]
