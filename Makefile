# K2 — two commands do everything on a fresh machine (Python ≥ 3.11 and Java 17+ present):
#   make demo   runs K2's main job end to end on the embedded defaults
#   make test   sets up, starts the services through K2's launcher, runs the whole suite, stops them
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup system-deps lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "K2 needs Python 3.11+"'
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: system-deps $(STAMP)

# redis-server (Debian package) and Maven, which fetches the Kafka jars; Java 17+ is assumed.
system-deps:
	@bash scripts/system-deps.sh

demo: setup
	$(BIN)/k2 demo

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/pytest tests

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: setup
	$(BIN)/python -m benchmarks $(ARGS)

clean:
	rm -rf $(VENV) .k2 .pytest_cache .ruff_cache
