# The two commands a user needs: `make run` and `make test`. Everything else is what they call.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint unit integration up down bench faults clean tools install image

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is needed ($(PYTHON) not found)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

# With AVRO_FRAMING=registry also the schema registry (Apicurio); `make down` stops what `make up` started.
up:
	@bash stack/up.sh

down:
	@bash stack/down.sh

# The local stack, the bridge, a worker and the simulator; Ctrl-C stops what it started
# (the brokers too, when this run started them: pipeline.demo runs stack/up.sh itself to know).
run: $(STAMP)
	$(PY) -m pipeline.demo

# The image from the Dockerfile: `docker build` where there is a Docker engine, else podman with a
# local stand-in base made by mmdebstrap (no registry needed). Reuses what a previous run built.
image:
	@bash stack/image.sh

# Test-only tools: kustomize for the manifest tests, Debian's chromium for the dashboard test,
# promtool and the prometheus-operator CRDs for the monitoring tests, the packages and Kubernetes
# binaries of the one-node test cluster (docs/kubernetes.md).
tools:
	@bash tests/k8s/tools.sh
	@bash tests/k8s/cluster/tools.sh
	@bash stack/chromium.sh
	@bash tests/monitoring/tools.sh

# Lint and types first: fast, and before anything starts a broker.
lint: $(STAMP)
	$(PY) -m ruff check pipeline tests
	$(PY) -m mypy

test: $(STAMP) lint tools up
	$(PY) -m pytest -q tests

unit: $(STAMP)
	$(PY) -m pytest -q tests -m 'not integration'

integration: $(STAMP) up
	$(PY) -m pytest -q tests -m integration

# Fault injection on a private Kafka + RabbitMQ (tests/faults; also part of `make test`).
faults: $(STAMP) up
	$(PY) -m pytest -q tests/faults

bench: $(STAMP) up
	$(PY) -m pipeline bench

clean:
	rm -rf .bench .pytest_cache .hypothesis
