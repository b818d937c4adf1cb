# K2 — two commands do everything on a fresh machine (Python ≥ 3.11 and Java 17+ present):
#   make demo   K2 told in ten checked chapters, paced for a presenter (`k2 demo --fast`: a few minutes)
#   make test   sets up, starts the services through K2's launcher, runs the whole suite, stops them
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup native system-deps lint bench soak fuzz chaos chaos-cluster scale-test lock soak-ingest soak-short clean

# Every package, build tools included, comes from requirements.lock with its SHA-256 (--require-hashes):
# pyproject.toml keeps the ranges K2 supports, the lock the exact files `make` installs. `make lock`
# re-resolves it after a change to pyproject.toml.
$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "K2 needs Python 3.11+"'
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes --no-deps -r requirements.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q "pip-tools>=7.4,<8"
	.lock-venv/bin/pip-compile -q --generate-hashes --allow-unsafe --all-build-deps --extra dev --no-emit-find-links \
		--strip-extras -o requirements.lock pyproject.toml
	rm -rf .lock-venv

setup: system-deps $(STAMP) native

# K2's native consumer (native/: Rust over librdkafka, issue #17), built when cargo is present and its
# sources changed; without cargo the pipeline reads with confluent-kafka. K2_NATIVE=0 skips it.
native: $(STAMP)
	@bash scripts/build-native.sh $(BIN)/python

# redis-server and postgresql (Debian packages), Maven, which fetches the Kafka jars, and chromium + chromedriver for the
# dashboard's browser test; Java 17+ is assumed.
system-deps:
	@bash scripts/system-deps.sh

demo: setup
	$(BIN)/k2 demo

test: setup
	$(BIN)/ruff check src tests benchmarks chaos
	$(BIN)/mypy
	$(BIN)/pytest tests

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks chaos
	$(BIN)/ruff format --check src tests benchmarks chaos
	PYTHONPATH=src $(BIN)/lint-imports --no-cache
	$(BIN)/mypy

# The peers K2 is measured against (pyproject's bench extra: ArcticDB, the Bloom filters, RocksDB,
# QuestDB's client, chDB); without ArcticDB bench_query stops before writing its result. The lock
# covers the dev extra only, so these are installed by name, leaving the locked packages as they are.
# bench_peers also needs Maven and Java 17+ (QuestDB's server jar, fetched once into K2's cache).
bench: setup
	$(BIN)/pip install -q 'arcticdb>=6.28,<7' 'rbloom>=1.5,<2' 'pybloom-live>=4,<5' 'bloom-filter2>=2,<3' \
		'rocksdict>=0.3,<0.4' 'questdb>=6,<7' 'chdb>=4.4,<5'
	$(BIN)/python -m benchmarks $(ARGS)

# The API under N concurrent clients for 10 minutes on loopback (ARGS="--clients 12 --seconds 600"): PASS
# when there is no 5xx and, after the first half (warm-up), RSS grows < 1 MiB/min and threads stay put.
soak: setup
	$(BIN)/python -m benchmarks.soak $(ARGS)

# Schemathesis against a real server, every phase (stateful included) and every check.
fuzz: setup
	$(BIN)/python -m benchmarks.fuzz $(ARGS)

# The chaos matrix of issue #12: every scenario on both state backends, SEEDS seeds each and
# HEAVY_SEEDS for the ingester and broker SIGKILLs. The default (26 runs) takes about 40 min here;
# `make chaos SEEDS=5 HEAVY_SEEDS=20` is the issue's bar (170 runs, about 4.5 hours). ARGS: --help.
SEEDS ?= 1
HEAVY_SEEDS ?= 2
chaos: setup
	$(BIN)/python -m chaos --seeds $(SEEDS) --heavy-seeds $(HEAVY_SEEDS) $(ARGS)

# The scale-out faults of issue #16 on a 3-node KRaft cluster (replication 3, min.insync.replicas 2):
# a broker and then the active controller SIGKILLed mid-feed, the single-broker outage, and 2-3
# ingesters in one group; each run checked against the exact truth (about 3 min a run here).
chaos-cluster: setup
	$(BIN)/python -m chaos --brokers 3 --scenarios kill-nodes,kill-broker,group --seeds $(SEEDS) $(ARGS)

# Issue #16's scale tests (pytest -m scale; `make test` leaves them out): Spark reads K2's tables through
# Iceberg's JDBC catalog (SQLite, PostgreSQL, PostgreSQL with the warehouse on S3) and must equal K2's API; the warehouse on a real S3 server (SeaweedFS, built
# once from its Go module: about 13 minutes the first time on a fresh machine); 4 writer processes
# committing 150 times each to one table through the PostgreSQL catalog; two `k2 serve` replicas behind
# the nginx of `k2 services up proxy` (one API, one Redis rate limit, a SIGKILLed replica). pyspark is the scale extra,
# installed by name like the bench peers; the Iceberg runtime, AWS bundle and JDBC jars come with Maven into K2's
# cache, checked against pins. ARGS: more pytest options.
scale-test: setup
	$(BIN)/pip install -q 'pyspark>=4.0.1,<4.1'
	$(BIN)/pytest tests -m scale -s $(ARGS)

# Weeks of unattended ingest compressed into under an hour (>= 5,000 commits, queries alongside).
soak-ingest: setup
	$(BIN)/python -m benchmarks.soak_ingest --commits 5000 --every 1000 $(ARGS)

# The same in a few minutes: proves the soak and the maintenance defaults work.
soak-short: setup
	$(BIN)/python -m benchmarks.soak_ingest --commits 300 --every 100 $(ARGS)

clean:
	rm -rf $(VENV) .k2 .pytest_cache .ruff_cache
