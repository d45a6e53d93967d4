"""Routing of cache misses to engines: backends and their health, balancing, the upstream relay."""
