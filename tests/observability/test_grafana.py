"""deploy/grafana: the dashboard queries only metrics and labels the gateway exports, its
layout is sound, and the provisioning files point at each other."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.cache.embedder import Embedder
from gateway.observability import Metrics

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "semcache-gateway.json"
SELECTOR = re.compile(r"\b(gateway_[a-z0-9_]+)(\{[^}]*\})?")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|ignoring|on)\s*\(([^)]*)\)")
LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
SUFFIXES: dict[str, tuple[str, ...]] = {"counter": ("_total",), "gauge": ("",), "info": ("_info",)}
SUFFIXES["histogram"] = ("_bucket", "_sum", "_count")


def exported() -> dict[str, set[str]]:
    """Every sample name the gateway can export -> its label names."""
    metrics = Metrics("test")
    metrics.watch_embedder(Embedder())  # not started: its counters are there, at 0
    labels_of = {
        m._name: set(m._labelnames)  # prometheus_client keeps label names there
        for m in vars(metrics).values()
        if hasattr(m, "_labelnames")
    }
    names: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        labels = labels_of.get(family.name, labels_of.get(f"{family.name}_total", set()))
        for suffix in SUFFIXES[family.type]:
            names[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names


def targets(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (panel["title"], target)
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def test_every_query_uses_exported_metrics_and_labels(dashboard: dict[str, Any]) -> None:
    names = exported()
    assert "gateway_request_duration_seconds_bucket" in names  # the helper itself works
    queried: set[str] = set()
    for title, target in targets(dashboard):
        expr = target["expr"]
        in_expr: set[str] = set()
        for name, braces in SELECTOR.findall(expr):
            assert name in names, f"{title}: {name} is not exported"
            queried.add(name)
            in_expr |= names[name]
            for label in MATCHER.findall(braces):
                assert label in names[name], f"{title}: {name} has no label {label}"
        assert SELECTOR.search(expr), f"{title}: queries no gateway metric"
        grouped = {g.strip() for group in GROUPING.findall(expr) for g in group.split(",")}
        assert grouped - {""} <= in_expr, f"{title}: groups by {grouped - in_expr}"
        for label in LEGEND.findall(target.get("legendFormat", "")):
            assert label in in_expr, f"{title}: legend uses {label}"
    # The families the issue asks for are all on the dashboard.
    for needed in (
        "gateway_requests_total",
        "gateway_cache_lookups_total",
        "gateway_request_duration_seconds_bucket",
        "gateway_time_to_first_token_seconds_bucket",
        "gateway_time_per_output_token_seconds_bucket",
        "gateway_cache_stage_duration_seconds_bucket",
        "gateway_cache_store_errors_total",
        "gateway_backend_breaker_state",
        "gateway_backend_up",
        "gateway_backend_in_flight_requests",
        "gateway_admission_queue_depth",
        "gateway_tokens_saved_total",
        "gateway_cost_saved_total",
        "gateway_rejected_requests_total",
    ):
        assert needed in queried, needed


def test_a_broken_query_would_be_caught() -> None:
    names = exported()
    assert "gateway_request_seconds_bucket" not in names
    assert "status" not in names["gateway_cache_lookups_total"]


def test_layout_ids_and_datasources(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "semcache-gateway" and dashboard["schemaVersion"] >= 36
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]
            assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
    [variable] = dashboard["templating"]["list"]
    assert variable["name"] == "datasource" and variable["query"] == "prometheus"


def test_provisioning_files_agree(dashboard: dict[str, Any]) -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    [source] = datasources["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"]
    assert source["url"] == "http://prometheus:9090"  # the compose service
    [variable] = dashboard["templating"]["list"]
    assert variable["current"]["value"] == source["uid"]
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/semcache.yml").read_text())
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    readme = (GRAFANA / "README.md").read_text()
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in readme


def test_prometheus_scrapes_the_gateway_metrics() -> None:
    prometheus = yaml.safe_load((GRAFANA.parent / "prometheus.yml").read_text())
    [job] = [j for j in prometheus["scrape_configs"] if j["job_name"] == "gateway"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert any(t.endswith(":8080") for c in job["static_configs"] for t in c["targets"])
