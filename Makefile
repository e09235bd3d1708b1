# The README's commands. Each target installs what it needs into ./.venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-packages jq run up test bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

## Debian packages the tests use: redis-server (the reliability tests start private Redis servers)
## and jq (the README walkthrough's test runs the README's own commands, which use it).
system-packages: jq
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }

## jq, which the README's walkthrough uses to pick fields out of responses (Debian's package).
jq:
	@command -v jq >/dev/null || { apt-get update -qq && apt-get install -y -qq jq; } \
		|| echo "jq is missing and could not be installed: install it (e.g. sudo apt-get install jq) for the README's walkthrough"

## Set up and run all of Parley on its embedded defaults: the API, a Celery worker and beat, with
## SQLite and the embedded broker under ./var (no other server needed). Ctrl-C stops everything.
run: setup
	$(BIN)/parley up --demo

## The same without the demo users: the README's walkthrough provisions its own.
up: setup jq
	$(BIN)/parley up

## Set up and run the whole test suite (needs PostgreSQL on 127.0.0.1:5432, trust auth).
test: setup system-packages
	$(BIN)/pytest

## Seed PostgreSQL with a large data set and print latency and throughput figures.
bench: setup
	$(BIN)/python bench/core_bench.py
