"""python -m engine: help texts and the command line `serve` would run."""

from __future__ import annotations

import shlex
import subprocess
import sys

import pytest

from engine.cli import main
from engine.models import DEFAULT_MODEL_NAME, prepare_default_model


def test_help_documents_every_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "engine", "--help"], capture_output=True, text=True, check=True
    )
    assert "prepare" in result.stdout and "serve" in result.stdout


@pytest.mark.parametrize("command", ["prepare", "serve", "build-llama-server"])
def test_each_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert "--data-dir" in capsys.readouterr().out


def test_print_command_maps_options_and_passes_extra_args(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        [
            "serve",
            "--print-command",
            "--model",
            "/models/x",
            "--device",
            "gpu",
            "--port",
            "8123",
            "--quantization",
            "awq",
            "--no-enable-prefix-caching",
            "--max-num-seqs",
            "8",
            "--speculative-config",
            '{"method": "ngram"}',
            "--",
            "--disable-log-stats",
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    argv = shlex.split(lines[0])
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert argv[argv.index("--model") + 1] == "/models/x"
    assert argv[argv.index("--port") + 1] == "8123"
    assert argv[argv.index("--quantization") + 1] == "awq"
    assert argv[argv.index("--max-num-seqs") + 1] == "8"
    assert argv[argv.index("--speculative-config") + 1] == '{"method":"ngram"}'
    assert "--no-enable-prefix-caching" in argv and "--gpu-memory-utilization" in argv
    assert "--enforce-eager" not in argv  # gpu default
    assert argv[-1] == "--disable-log-stats"
    assert "HF_HUB_OFFLINE=1" in lines[1:]


def test_serve_without_model_uses_the_prepared_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", "--print-command", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    argv = shlex.split(lines[0])
    assert argv[argv.index("--model") + 1] == str(prepare_default_model())
    assert argv[argv.index("--served-model-name") + 1] == DEFAULT_MODEL_NAME
    assert "--enforce-eager" in argv and argv[argv.index("--max-model-len") + 1] == "2048"
    assert any(line.startswith("VLLM_CPU_KVCACHE_SPACE=") for line in lines[1:])
