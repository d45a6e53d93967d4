"""Semantic-caching, OpenAI-compatible gateway in front of a pool of vLLM engines."""

__version__ = "0.1.0"
