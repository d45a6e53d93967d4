"""The HTTP surface: OpenAI routes, health, admin, and the OpenAI error format."""
