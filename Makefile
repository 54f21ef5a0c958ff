# The two commands of the README: `make run` and `make test`. Both install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
JS := tests/interop/js

.PHONY: run test lint install install-test install-bench bench bench-storage bench-peers clean

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
install-test: $(VENV)/.installed-test $(JS)/node_modules/.package-lock.json
install-bench: install-test $(VENV)/.installed-bench benchmarks/peers/node_modules/.package-lock.json

## Run the server on embedded defaults: port 3006, SQLite under ./data, no Redis or PostgreSQL.
run: install
	$(BIN)/python -m server

## Run the whole test suite (needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379):
## lint and types first, then every test.
test: install-test lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## ruff (rules and formatting) and mypy --strict, as configured in pyproject.toml.
lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install-test
	$(BIN)/python -m benchmarks.fanout $(BENCH_ARGS)

bench-storage: install-test
	$(BIN)/python -m benchmarks.storage $(BENCH_ARGS)

## This server beside @y/websocket-server, Hocuspocus and a bare Python relay (benchmarks/README.md).
bench-peers: install-bench
	$(BIN)/python -m benchmarks.peers $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(JS)/node_modules
