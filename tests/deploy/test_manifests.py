"""Offline validation of deploy/: docker-compose (Compose spec schema), Dockerfile, Prometheus
and Kubernetes manifests (vendored OpenAPI schemas, strict), plus cross-checks against the
gateway's real Settings. Each rule is also shown to catch a broken copy of the files."""

from __future__ import annotations

import copy
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
spec = importlib.util.spec_from_file_location("deploy_validate", DEPLOY / "validate.py")
assert spec is not None and spec.loader is not None
validate = importlib.util.module_from_spec(spec)
sys.modules["deploy_validate"] = validate
spec.loader.exec_module(validate)


def load(name: str) -> Any:
    return yaml.safe_load((DEPLOY / name).read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = load("docker-compose.yml")
    return data


@pytest.fixture(scope="module")
def k8s_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = validate.k8s_documents(DEPLOY / "k8s")
    return docs


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def test_every_deploy_file_is_valid() -> None:
    assert validate.all_problems() == []


def test_validate_script_exit_code() -> None:
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "validate.py")], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all files valid" in result.stdout


# -- compose ----------------------------------------------------------------------------------
def test_compose_stack_shape(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["redis"]["image"] == "redis:8"
    engines = [n for n, s in services.items() if s["image"].startswith("vllm/vllm-openai")]
    assert len(engines) >= 2
    gpus = {
        s["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"][0]
        for n, s in services.items()
        if n in engines
    }
    assert len(gpus) == len(engines)  # one GPU each
    assert services["gateway"]["build"]["dockerfile"] == "deploy/Dockerfile"


def test_compose_schema_rejects_unknown_keys(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["gateway"]["healthchek"] = {}
    assert any("healthchek" in p for p in validate.compose_problems(broken))


def test_unknown_gateway_setting_is_caught(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["gateway"]["environment"]["GATEWAY_CACHE__REDIS_URI"] = "redis://redis"
    assert any(
        "GATEWAY_CACHE__REDIS_URI: no such gateway setting" in p
        for p in validate.compose_problems(broken)
    )


def test_unparseable_gateway_setting_is_caught(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["gateway"]["environment"]["GATEWAY_PORT"] = "eighty"
    assert any("do not parse" in p for p in validate.compose_problems(broken))


def test_backend_must_name_a_service_and_port(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    env = broken["services"]["gateway"]["environment"]
    env["GATEWAY_BACKENDS"] = env["GATEWAY_BACKENDS"].replace("vllm-1:8000", "vllm-9:8000")
    env["GATEWAY_CACHE__REDIS_URL"] = "redis://redis:6379/0"
    problems = validate.compose_problems(broken)
    assert any("no service named 'vllm-9'" in p for p in problems)
    env["GATEWAY_BACKENDS"] = env["GATEWAY_BACKENDS"].replace("vllm-9:8000", "vllm-1:9000")
    assert any("does not listen on 9000" in p for p in validate.compose_problems(broken))


def test_engine_needs_gpu_and_prefix_caching(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    del broken["services"]["vllm-0"]["deploy"]
    broken["services"]["vllm-1"]["command"] = [
        a for a in broken["services"]["vllm-1"]["command"] if a != "--enable-prefix-caching"
    ]
    problems = validate.compose_problems(broken)
    assert "docker-compose.yml: vllm-0: no GPU reservation" in problems
    assert "docker-compose.yml: vllm-1: prefix caching is not enabled" in problems


def test_redis_persistence_and_eviction(compose: dict[str, Any]) -> None:
    command = " ".join(compose["services"]["redis"]["command"])
    assert validate.redis_problems(command, "x") == []
    assert len(validate.redis_problems("redis-server --save ''", "x")) == 3
    conf = find(validate.k8s_documents(DEPLOY / "k8s"), "ConfigMap", "redis-config")
    assert validate.redis_problems(conf["data"]["redis.conf"], "x") == []


def test_prometheus_scrapes_gateway_and_every_engine(compose: dict[str, Any]) -> None:
    prometheus = load("prometheus.yml")
    assert validate.prometheus_problems(prometheus, compose) == []
    prometheus["scrape_configs"][1]["static_configs"][0]["targets"] = ["vllm-0:8000"]
    assert validate.prometheus_problems(prometheus, compose) == [
        "prometheus.yml: vllm-1 is not scraped"
    ]


def test_engines_serve_the_model_quantize_writes(compose: dict[str, Any]) -> None:
    from engine.models import DEFAULT_MODEL_NAME

    expected = f"--model=/models/{DEFAULT_MODEL_NAME}-awq-w4a16"
    assert expected in compose["x-vllm"]["command"]


# -- Dockerfile -------------------------------------------------------------------------------
def test_dockerfile_rules() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert validate.dockerfile_problems(text) == []
    as_root = text.replace("USER gateway:gateway", "USER root")
    assert "Dockerfile: does not switch to a non-root USER" in validate.dockerfile_problems(as_root)
    with_extras = text.replace(
        'pip install --extra-index-url "${TORCH_INDEX_URL}" .',
        'pip install --extra-index-url "${TORCH_INDEX_URL}" ".[gpu]"',
    )
    assert "Dockerfile: installs the engine extras" in validate.dockerfile_problems(with_extras)


def test_dockerignore_keeps_only_the_package() -> None:
    lines = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert lines[lines.index("**")] == "**" and "!gateway/**" in lines and "!engine/**" in lines


# -- kubernetes -------------------------------------------------------------------------------
def test_k8s_kinds(k8s_docs: list[dict[str, Any]]) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in k8s_docs}
    for wanted in [
        ("Deployment", "gateway"),
        ("Service", "gateway"),
        ("HorizontalPodAutoscaler", "gateway"),
        ("StatefulSet", "redis"),
        ("Deployment", "vllm"),
        ("Service", "vllm-headless"),
    ]:
        assert wanted in kinds


def test_k8s_strict_schema_catches_typos(k8s_docs: list[dict[str, Any]]) -> None:
    docs = copy.deepcopy(k8s_docs)
    container = find(docs, "Deployment", "vllm")["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    problems = validate.k8s_problems(docs)
    assert any("readinesProbe" in p for p in problems)
    assert "k8s Deployment/vllm: no readinessProbe" in problems


def test_k8s_cross_checks(k8s_docs: list[dict[str, Any]]) -> None:
    docs = copy.deepcopy(k8s_docs)
    engine = find(docs, "Deployment", "vllm")["spec"]["template"]["spec"]["containers"][0]
    del engine["resources"]["requests"]["nvidia.com/gpu"]
    find(docs, "Service", "redis")["spec"]["selector"] = {"app.kubernetes.io/name": "redis-x"}
    del find(docs, "Service", "vllm-headless")["spec"]["clusterIP"]
    find(docs, "HorizontalPodAutoscaler", "gateway")["spec"]["scaleTargetRef"]["name"] = "other"
    find(docs, "ConfigMap", "gateway-env")["data"]["GATEWAY_TIMEOUTS__FIRST_BYTE"] = "3"
    problems = validate.k8s_cross_problems(docs)
    assert "k8s Deployment/vllm: requests no nvidia.com/gpu" in problems
    assert (
        "k8s gateway env: dns://vllm-headless:8000: Service/vllm-headless is not headless"
        in problems
    )
    assert "k8s Service/redis: selects no pods" in problems
    assert "k8s: no HorizontalPodAutoscaler for the gateway" in problems
    assert any("GATEWAY_TIMEOUTS__FIRST_BYTE: no such gateway setting" in p for p in problems)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_renders_offline() -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / "k8s")], capture_output=True, text=True, check=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    assert all(
        d["metadata"].get("namespace") == "semcache" for d in docs if d["kind"] != "Namespace"
    )
    assert validate.k8s_problems(docs) == []
