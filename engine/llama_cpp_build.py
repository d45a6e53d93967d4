"""Build llama.cpp's own ``llama-server`` once, from the MIT sdist of PyPI ``llama-cpp-python``.

Debian has no llama.cpp package, and the PyPI wrappers that ship a binary are AGPL; the
``llama-cpp-python`` sdist (MIT) vendors llama.cpp's whole tree, ``tools/server`` included.
``ensure_llama_server()`` downloads that sdist with pip (hash-pinned), unpacks only
``vendor/llama.cpp``, and builds the single ``llama-server`` target with cmake: Release, CPU
only, static libraries, no OpenSSL, no web UI download, no tests or examples. The binary is
kept under ``<data_dir>/llama.cpp/<version>/<variant>/`` (data_dir: $ENGINE_DATA_DIR, else
~/.cache/semcache-gateway), so CI and ``make run`` build it at most once per machine.

``variant`` is ``x86-64-v3`` (AVX2/FMA/F16C, not -march=native) where the CPU has AVX2, so a
cache restored on another x86 CI machine still runs; elsewhere ``native``.
Crash-safe like engine/models.py: built in a temporary folder, moved into place with a marker
file written last, serialised by a file lock. ``$LLAMA_SERVER_BIN`` names a binary to use
instead (a CUDA build, a distribution's package): nothing is built then.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from engine.models import default_data_dir, file_lock

SDIST = "llama-cpp-python"
VERSION = "0.3.36"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
VENDORED = f"llama_cpp_python-{VERSION}/vendor/llama.cpp"
BINARY = "llama-server"
MARKER = ".built.json"
ENV_BINARY = "LLAMA_SERVER_BIN"
# Bump when the flags change: older builds are rebuilt.
BUILD_VERSION = 1
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # would download the web UI from Hugging Face
    "-DLLAMA_OPENSSL=OFF",
    "-DGGML_CCACHE=OFF",
)
X86_V3 = {"avx2", "fma", "f16c", "bmi2"}


class LlamaBuildError(RuntimeError):
    """llama-server could not be downloaded or built; carries the tail of the build log."""


def cpu_variant() -> str:
    """``x86-64-v3`` on x86 CPUs with AVX2 (a portable build), else ``native``."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return "native"
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "native"
    return "x86-64-v3" if flags >= X86_V3 else "native"


def variant_flags(variant: str) -> list[str]:
    # GGML_NATIVE=OFF on x86 turns on SSE4.2/AVX/AVX2/FMA/F16C/BMI2 and nothing newer.
    return ["-DGGML_NATIVE=OFF"] if variant == "x86-64-v3" else ["-DGGML_NATIVE=ON"]


def build_dir(data_dir: Path | None = None, variant: str | None = None) -> Path:
    return (data_dir or default_data_dir()) / "llama.cpp" / VERSION / (variant or cpu_variant())


def built_binary(folder: Path) -> Path | None:
    """The binary in ``folder`` when its marker says it is a complete, current build."""
    try:
        info = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    binary = folder / BINARY
    if not isinstance(info, dict) or info.get("build_version") != BUILD_VERSION:
        return None
    return binary if os.access(binary, os.X_OK) else None


def llama_server_path(data_dir: Path | None = None) -> Path | None:
    """$LLAMA_SERVER_BIN, else the cached build; None when neither exists (nothing is built)."""
    env = os.environ.get(ENV_BINARY)
    if env:
        return Path(env).expanduser()
    return built_binary(build_dir(data_dir))


def ensure_llama_server(data_dir: Path | None = None, jobs: int = 2) -> Path:
    """The llama-server binary, built the first time (minutes; see docs/engines.md)."""
    found = llama_server_path(data_dir)
    if found is not None:
        return found
    target = build_dir(data_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{target.name}.lock"):
        found = built_binary(target)  # another process may have finished while we waited
        if found is not None:
            return found
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            _build(work, target.name, jobs)
            if target.exists():
                shutil.rmtree(target)
            (work / "out").rename(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    binary = built_binary(target)
    if binary is None:
        raise LlamaBuildError(f"{target} holds no finished build")
    return binary


def _build(work: Path, variant: str, jobs: int) -> None:
    """Download, unpack, configure and build in ``work``; the result goes to ``work/out``."""
    log_path = work / "build.log"
    started = time.monotonic()
    source = _unpack(_download(work, log_path), work)
    unpacked = time.monotonic()
    build = work / "build"
    flags = [*CMAKE_FLAGS, *variant_flags(variant)]
    _run(["cmake", "-S", str(source), "-B", str(build), *flags], log_path)
    _run(["cmake", "--build", str(build), "--target", BINARY, f"-j{jobs}"], log_path)
    compiled = time.monotonic()
    out = work / "out"
    out.mkdir()
    shutil.copy2(build / "bin" / BINARY, out / BINARY)
    shutil.copy2(source / "LICENSE", out / "LICENSE")  # MIT: the notice travels with the binary
    shutil.copy2(log_path, out / "build.log")
    info = {
        "build_version": BUILD_VERSION,
        "sdist": f"{SDIST}=={VERSION}",
        "sha256": SDIST_SHA256,
        "variant": variant,
        "cmake_flags": flags,
        "jobs": jobs,
        "download_unpack_s": round(unpacked - started, 1),
        "compile_s": round(compiled - unpacked, 1),
        "built_at": time.time(),
    }
    (out / MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    out.chmod(0o755)


def _download(work: Path, log_path: Path) -> Path:
    """The sdist, fetched by pip and checked against its pinned sha256."""
    requirements = work / "requirements.txt"
    requirements.write_text(f"{SDIST}=={VERSION} --hash=sha256:{SDIST_SHA256}\n")
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    pip += ["--no-binary", ":all:", "--require-hashes", "-r", str(requirements), "-d", str(work)]
    _run(pip, log_path)
    found = sorted(work.glob("llama_cpp_python-*.tar.gz"))
    if not found:
        raise LlamaBuildError(f"pip downloaded no sdist into {work}")
    return found[0]


def _unpack(sdist: Path, work: Path) -> Path:
    """Only vendor/llama.cpp (the Python bindings are not needed)."""
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if m.name.startswith(f"{VENDORED}/")]
        archive.extractall(work / "src", members=members, filter="data")
    sdist.unlink()
    return work / "src" / VENDORED


def _run(argv: list[str], log_path: Path) -> None:
    """Run one step, its output appended to the build log; raise with the log's tail."""
    with log_path.open("ab") as log:
        log.write(f"$ {' '.join(argv)}\n".encode())
        log.flush()
        try:
            done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False)
        except FileNotFoundError as error:
            raise LlamaBuildError(f"{argv[0]} not found: apt-get install cmake g++ make") from error
    code = done.returncode
    if code != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
        raise LlamaBuildError(f"{argv[0]} {argv[1]} failed with code {code}:\n{tail}")
