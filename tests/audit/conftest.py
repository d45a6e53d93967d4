"""The audit tests share the cache tests' session embedder (the real all-MiniLM-L6-v2)."""

from tests.cache.conftest import embedder

__all__ = ["embedder"]
