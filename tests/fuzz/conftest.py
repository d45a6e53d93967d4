"""The fuzz tests need hypothesis and schemathesis (dev dependencies). Where they are missing,
the modules are left out of collection and the header says so, instead of failing to import."""

from __future__ import annotations

import importlib.util

import pytest

_NEEDS = {"test_normalization.py": "hypothesis", "test_openapi.py": "schemathesis"}
collect_ignore = [
    module for module, package in _NEEDS.items() if not importlib.util.find_spec(package)
]


def pytest_report_header(config: pytest.Config) -> str | None:
    if not collect_ignore:
        return None
    return f"tests/fuzz: NOT RUN (missing {', '.join(_NEEDS[m] for m in collect_ignore)})"
