# The README's commands. Each target installs what it needs into ./.venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

## Set up and run Parley on its embedded defaults (SQLite under ./var, no other server needed).
run: setup
	$(BIN)/parley serve

## Set up and run the whole test suite (needs PostgreSQL on 127.0.0.1:5432, trust auth).
test: setup
	$(BIN)/pytest

## Seed PostgreSQL with a large data set and print latency and throughput figures.
bench: setup
	$(BIN)/python bench/core_bench.py
