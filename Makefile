# The two commands of the README: `make run` and `make test`. Both install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
JS := tests/interop/js
DEMO := web_demo

.PHONY: run test lint check-containers install install-test install-bench demo bench bench-storage bench-peers clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

$(JS)/node_modules/.package-lock.json: $(JS)/package-lock.json
	cd $(JS) && npm ci --no-audit --no-fund --loglevel=error

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@ $(VENV)/.installed $(VENV)/.installed-test

benchmarks/peers/node_modules/.package-lock.json: benchmarks/peers/package-lock.json
	cd benchmarks/peers && npm ci --no-audit --no-fund --loglevel=error

install: $(VENV)/.installed
$(DEMO)/node_modules/.package-lock.json: $(DEMO)/package-lock.json
	cd $(DEMO) && npm ci --no-audit --no-fund --loglevel=error

install-test: $(VENV)/.installed-test $(JS)/node_modules/.package-lock.json $(DEMO)/node_modules/.package-lock.json
install-bench: install-test $(VENV)/.installed-bench benchmarks/peers/node_modules/.package-lock.json

## Rebuild the browser demo (web_demo/src -> web_demo/dist, committed; served at /demo).
demo: $(DEMO)/node_modules/.package-lock.json
	cd $(DEMO) && npm run build

## Run the server on embedded defaults: port 3006, SQLite under ./data, no Redis or PostgreSQL.
run: install
	$(BIN)/python -m server

## Run the whole test suite (needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379):
## lint and types first, then every test, in TEST_WORKERS processes (pytest-xdist).
TEST_WORKERS ?= 2
test: install-test lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

## ruff (rules and formatting) and mypy --strict, as configured in pyproject.toml.
lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## The container files: Compose parses the compose file (with and without .env.example; no Docker
## daemon needed), hadolint lints the Dockerfile. Needs docker-compose (Debian's package).
COMPOSE := docker-compose -f docker-compose.realtime-collaboration.yml
check-containers: install-test
	$(COMPOSE) config -q
	$(COMPOSE) --env-file .env.example config -q
	$(BIN)/hadolint Dockerfile

bench: install-test
	$(BIN)/python -m benchmarks.fanout $(BENCH_ARGS)

bench-storage: install-test
	$(BIN)/python -m benchmarks.storage $(BENCH_ARGS)

## This server beside @y/websocket-server, Hocuspocus and a bare Python relay (benchmarks/README.md).
bench-peers: install-bench
	$(BIN)/python -m benchmarks.peers $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(JS)/node_modules $(DEMO)/node_modules
