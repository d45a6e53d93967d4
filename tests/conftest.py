pytest_plugins = [
    "tests.support.engine",
    "tests.support.redis",
    "tests.support.gateway",
    "tests.support.llama_engine",
]
