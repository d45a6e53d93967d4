"""Validate the deployment files offline (no Docker engine, no Kubernetes API server here).

    python deploy/validate.py            # exit 1 and one line per problem if any

- docker-compose.yml against the Compose Specification's JSON schema (vendored by the PyPI
  package check-jsonschema), then what the schema cannot know: every GATEWAY_* variable is a
  real field of gateway.config.Settings and the whole environment parses, backends and
  Prometheus targets name services and ports that exist, engines reserve GPUs and enable
  prefix caching, Redis persists (AOF) with a memory cap and an eviction policy.
- Dockerfile: slim Python base, non-root USER, HEALTHCHECK on /health, no engine extras.
- deploy/k8s: every document against the Kubernetes OpenAPI schemas (vendored by the PyPI
  package kubernetes-validate, strict: unknown fields are errors), then the same cross-checks
  (Services select pods that exist, HPA targets the gateway Deployment which requests CPU,
  engines request nvidia.com/gpu and have readiness probes, ConfigMap settings are valid).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
KUBERNETES_VERSION = "1.33.0"
ENGINE_MODEL_ARG = "--served-model-name="

if str(ROOT) not in sys.path:  # run as a script: make the gateway package importable
    sys.path.insert(0, str(ROOT))


# -- gateway settings -------------------------------------------------------------------------
def setting_problems(env: dict[str, str], where: str) -> list[str]:
    """Every GATEWAY_* name must be a Settings field path, and the values must parse."""
    from pydantic import BaseModel, ValidationError

    from gateway.config import CONFIG_FILE_ENV, Settings

    problems = []
    for name in env:
        if not name.startswith("GATEWAY_") or name == CONFIG_FILE_ENV:
            continue
        model: type[BaseModel] | None = Settings
        for part in name.removeprefix("GATEWAY_").lower().split("__"):
            field = model.model_fields.get(part) if model else None
            if field is None:
                problems.append(f"{where}: {name}: no such gateway setting")
                break
            annotation = field.annotation
            model = (
                annotation
                if isinstance(annotation, type) and issubclass(annotation, BaseModel)
                else None
            )
    with _environment({k: v for k, v in env.items() if k.startswith("GATEWAY_")}):
        try:
            Settings()
        except ValidationError as error:
            problems.append(f"{where}: gateway settings do not parse: {error}")
    return problems


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: v for k, v in os.environ.items() if k.startswith("GATEWAY_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(values)
    try:
        yield
    finally:
        for key in values:
            os.environ.pop(key, None)
        os.environ.update(saved)


def backends(env: dict[str, str]) -> list[dict[str, Any]]:
    raw = env.get("GATEWAY_BACKENDS", "[]")
    data = json.loads(raw)
    return data if isinstance(data, list) else []


# -- compose ----------------------------------------------------------------------------------
def compose_schema() -> dict[str, Any]:
    import check_jsonschema

    path = Path(check_jsonschema.__file__).parent / "builtin_schemas/vendor/compose-spec.json"
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


def schema_errors(document: Any, schema: dict[str, Any], where: str) -> list[str]:
    from jsonschema.validators import validator_for

    validator = validator_for(schema)(schema)
    return [
        f"{where}: {'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    ]


def compose_problems(compose: dict[str, Any], where: str = "docker-compose.yml") -> list[str]:
    problems = schema_errors(compose, compose_schema(), where)
    services: dict[str, Any] = compose.get("services") or {}
    ports = {name: _compose_ports(service) for name, service in services.items()}
    engines = [n for n, s in services.items() if "vllm/vllm-openai" in str(s.get("image", ""))]
    if not engines:
        problems.append(f"{where}: no vllm/vllm-openai engine service")
    for name in engines:
        service = services[name]
        args = [str(a) for a in service.get("command") or []]
        if "--enable-prefix-caching" not in args:
            problems.append(f"{where}: {name}: prefix caching is not enabled")
        devices = (
            service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")
        )
        if not devices or not any("gpu" in d.get("capabilities", []) for d in devices):
            problems.append(f"{where}: {name}: no GPU reservation")
    redis = next(
        (s for s in services.values() if str(s.get("image", "")).startswith("redis:8")), None
    )
    if redis is None:
        problems.append(f"{where}: no redis:8 service")
    else:
        problems += redis_problems(" ".join(map(str, redis.get("command") or [])), where)
        if not any(str(v).endswith(":/data") for v in redis.get("volumes") or []):
            problems.append(f"{where}: redis: /data (the AOF) is not on a volume")
    gateway = services.get("gateway")
    if gateway is None:
        return [*problems, f"{where}: no gateway service"]
    env = {str(k): str(v) for k, v in (gateway.get("environment") or {}).items()}
    problems += setting_problems(env, f"{where}: gateway")
    for backend in backends(env):
        problems += _target_problems(backend.get("url", ""), ports, f"{where}: gateway backend")
        models = (
            _served_names(services[urlparse(backend["url"]).hostname or ""]["command"])
            if urlparse(backend.get("url", "")).hostname in services
            else set()
        )
        if models and not set(backend.get("models", [])) <= models:
            problems.append(f"{where}: backend {backend['url']} lists models it does not serve")
    if "healthcheck" not in gateway:
        problems.append(f"{where}: gateway has no healthcheck")
    build = gateway.get("build") or {}
    dockerfile = DEPLOY / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
    if not dockerfile.resolve().is_file():
        problems.append(f"{where}: gateway build: {dockerfile} does not exist")
    return problems


def _compose_ports(service: dict[str, Any]) -> set[int]:
    """Ports a service listens on inside the network (published ones and --port= flags)."""
    found = set()
    for port in service.get("ports") or []:
        found.add(int(str(port).rsplit(":", 1)[-1].split("/")[0]))
    for arg in service.get("command") or []:
        match = re.fullmatch(r"--port=(\d+)", str(arg))
        if match:
            found.add(int(match.group(1)))
    env = service.get("environment") or {}
    if str(env.get("GATEWAY_PORT", "")).isdigit():
        found.add(int(env["GATEWAY_PORT"]))
    if str(service.get("image", "")).startswith("redis"):
        found.add(6379)
    return found


def _served_names(args: list[Any]) -> set[str]:
    return {
        str(a).removeprefix(ENGINE_MODEL_ARG) for a in args if str(a).startswith(ENGINE_MODEL_ARG)
    }


def _target_problems(url: str, ports: dict[str, set[int]], where: str) -> list[str]:
    parsed = urlparse(url if "://" in url else f"tcp://{url}")
    if parsed.hostname not in ports:
        return [f"{where}: {url}: no service named {parsed.hostname!r}"]
    if parsed.port not in ports[parsed.hostname]:
        return [f"{where}: {url}: {parsed.hostname} does not listen on {parsed.port}"]
    return []


def redis_problems(config: str, where: str) -> list[str]:
    """AOF on, a memory cap and an eviction policy (flags or redis.conf lines)."""
    words = config.replace("--", " ").split()
    pairs = dict(zip(words, [*words[1:], ""], strict=True))
    problems = []
    if pairs.get("appendonly") not in ("yes", '"yes"'):
        problems.append(f"{where}: redis: AOF persistence (appendonly yes) is off")
    if "maxmemory" not in pairs:
        problems.append(f"{where}: redis: no maxmemory")
    if pairs.get("maxmemory-policy", "noeviction") == "noeviction":
        problems.append(f"{where}: redis: no eviction policy (maxmemory-policy)")
    return problems


def prometheus_problems(prometheus: dict[str, Any], compose: dict[str, Any]) -> list[str]:
    services = compose.get("services") or {}
    ports = {name: _compose_ports(service) for name, service in services.items()}
    jobs = {job["job_name"]: job for job in prometheus.get("scrape_configs", [])}
    problems = []
    targets = [
        t for job in jobs.values() for c in job.get("static_configs", []) for t in c["targets"]
    ]
    for target in targets:
        problems += _target_problems(target, ports, "prometheus.yml")
    scraped = {t.split(":")[0] for t in targets}
    wanted = {"gateway"} | {
        n for n, s in services.items() if "vllm/vllm-openai" in str(s.get("image"))
    }
    for missing in sorted(wanted - scraped):
        problems.append(f"prometheus.yml: {missing} is not scraped")
    return problems


def dockerfile_problems(text: str) -> list[str]:
    problems = []
    lines = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    if not any(re.match(r"FROM python:3\.\d+-slim", line) for line in lines):
        problems.append("Dockerfile: base image is not python:3.x-slim")
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("Dockerfile: does not switch to a non-root USER")
    if not any(line.startswith("HEALTHCHECK") and "/health" in line for line in _joined(text)):
        problems.append("Dockerfile: no HEALTHCHECK on /health")
    if re.search(r"\.\[(cpu|gpu)", text):
        problems.append("Dockerfile: installs the engine extras")
    return problems


def _joined(text: str) -> list[str]:
    """Dockerfile instructions with their continuation lines joined."""
    return [line.strip() for line in text.replace("\\\n", " ").splitlines()]


# -- kubernetes -------------------------------------------------------------------------------
def k8s_documents(folder: Path) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8"))
    docs: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        docs += [
            d for d in yaml.safe_load_all((folder / resource).read_text(encoding="utf-8")) if d
        ]
    return docs


def k8s_problems(docs: list[dict[str, Any]]) -> list[str]:
    import kubernetes_validate

    problems = []
    for doc in docs:
        where = f"k8s {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(map(str, error.path))
            problems.append(f"{where}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{where}: no schema for {doc.get('apiVersion')} {doc.get('kind')}")
    return problems + k8s_cross_problems(docs)


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == kind}


def k8s_cross_problems(docs: list[dict[str, Any]]) -> list[str]:
    problems = []
    workloads = _by_kind(docs, "Deployment") | _by_kind(docs, "StatefulSet")
    services = _by_kind(docs, "Service")
    service_ports: dict[str, set[int]] = {}
    for name, service in services.items():
        selector = service["spec"].get("selector", {})
        matching = [
            w
            for w in workloads.values()
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        if not matching:
            problems.append(f"k8s Service/{name}: selects no pods")
        service_ports[name] = {p["port"] for p in service["spec"]["ports"]}
    engines = {n: w for n, w in workloads.items() if "vllm/vllm-openai" in _image(w)}
    if not engines:
        problems.append("k8s: no vLLM Deployment")
    for name, engine in engines.items():
        container = engine["spec"]["template"]["spec"]["containers"][0]
        requests = container.get("resources", {}).get("requests", {})
        if not requests.get("nvidia.com/gpu"):
            problems.append(f"k8s Deployment/{name}: requests no nvidia.com/gpu")
        if "readinessProbe" not in container:
            problems.append(f"k8s Deployment/{name}: no readinessProbe")
        if "--enable-prefix-caching" not in container.get("args", []):
            problems.append(f"k8s Deployment/{name}: prefix caching is not enabled")
    gateway = workloads.get("gateway")
    if gateway is None:
        return [*problems, "k8s: no gateway Deployment"]
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    if not container.get("resources", {}).get("requests", {}).get("cpu"):
        problems.append("k8s Deployment/gateway: no CPU request (the HPA scales on CPU)")
    pod_security = gateway["spec"]["template"]["spec"].get("securityContext", {})
    if not pod_security.get("runAsNonRoot"):
        problems.append("k8s Deployment/gateway: not runAsNonRoot")
    hpas = [
        h
        for h in _by_kind(docs, "HorizontalPodAutoscaler").values()
        if h["spec"]["scaleTargetRef"]["name"] == "gateway"
    ]
    if not hpas:
        problems.append("k8s: no HorizontalPodAutoscaler for the gateway")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        config_map = _by_kind(docs, "ConfigMap").get(source.get("configMapRef", {}).get("name", ""))
        if config_map is None:
            problems.append("k8s Deployment/gateway: envFrom names a missing ConfigMap")
        else:
            env |= {str(k): str(v) for k, v in config_map.get("data", {}).items()}
    env |= {e["name"]: str(e.get("value", "")) for e in container.get("env", [])}
    problems += setting_problems(env, "k8s gateway env")
    urls = [b.get("url", "") for b in backends(env)]
    if env.get("GATEWAY_CACHE__REDIS_URL"):
        urls.append(env["GATEWAY_CACHE__REDIS_URL"])
    for url in urls:
        problems += _target_problems(url, service_ports, "k8s gateway env")
        host = urlparse(url).hostname or ""
        headless = services.get(host, {}).get("spec", {}).get("clusterIP") == "None"
        if url.startswith("dns://") and not headless:
            # a ClusterIP Service resolves to one virtual IP: the gateway would see one engine
            problems.append(f"k8s gateway env: {url}: Service/{host} is not headless")
    return problems


def _image(workload: dict[str, Any]) -> str:
    return " ".join(c.get("image", "") for c in workload["spec"]["template"]["spec"]["containers"])


# -- all --------------------------------------------------------------------------------------
def all_problems(deploy: Path = DEPLOY) -> list[str]:
    compose = yaml.safe_load((deploy / "docker-compose.yml").read_text(encoding="utf-8"))
    prometheus = yaml.safe_load((deploy / "prometheus.yml").read_text(encoding="utf-8"))
    return (
        compose_problems(compose)
        + prometheus_problems(prometheus, compose)
        + dockerfile_problems((deploy / "Dockerfile").read_text(encoding="utf-8"))
        + k8s_problems(k8s_documents(deploy / "k8s"))
    )


def main() -> int:
    problems = all_problems()
    for problem in problems:
        print(problem)
    print(f"deploy: {len(problems)} problem(s)" if problems else "deploy: all files valid")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
