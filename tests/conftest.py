pytest_plugins = [
    "tests.support.engine",
    "tests.support.redis",
    "tests.support.redis_cluster",
    "tests.support.gateway",
    "tests.support.llama_engine",
]
