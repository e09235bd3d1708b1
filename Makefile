# The README's commands. Each target installs what it needs into ./.venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-packages run test bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

## Debian packages the tests use: redis-server (the reliability tests start private Redis servers).
system-packages:
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }

## Set up and run all of Parley on its embedded defaults: the API, a Celery worker and beat, with
## SQLite and the embedded broker under ./var (no other server needed). Ctrl-C stops everything.
run: setup
	$(BIN)/parley up --demo

## Set up and run the whole test suite (needs PostgreSQL on 127.0.0.1:5432, trust auth).
test: setup system-packages
	$(BIN)/pytest

## Seed PostgreSQL with a large data set and print latency and throughput figures.
bench: setup
	$(BIN)/python bench/core_bench.py
