PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: serve test lint typecheck bench fuzz chaos sim clean system-deps

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Bytecode is compiled once here: where PYTHONDONTWRITEBYTECODE is set, every broker start would
# otherwise compile the sources again (about a third of its start-up time).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	$(BIN)/python -m compileall -q src >/dev/null
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,bench]'
	$(BIN)/python -m compileall -q src >/dev/null
	touch $@ $(STAMP)

serve: $(STAMP)
	$(BIN)/odradek serve --listen 127.0.0.1:9092 --data-dir ./data --config config/server.properties

# kcat is one of the clients the integration tests drive; etcd (Debian's etcd-server) holds a
# cluster's metadata, and the cluster tests start their own etcd processes; nft (nftables) makes
# the fault tests' network partitions (tests/chaos, docs/CHAOS.md). Debian packages all three.
SYSTEM_DEPS := kcat:kcat etcd:etcd-server nft:nftables
system-deps:
	@for dep in $(SYSTEM_DEPS); do \
	  cmd=$${dep%%:*}; pkg=$${dep#*:}; \
	  command -v $$cmd >/dev/null 2>&1 && continue; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$pkg) >/dev/null \
	      || echo "warning: could not install $$pkg; the tests that need $$cmd will be skipped"; \
	  else echo "warning: $$cmd not found (Debian package $$pkg); its tests will be skipped"; fi; \
	done

# Two test processes (pytest-xdist): most tests wait on brokers and timers rather than use a
# core, so on CI's two cores this halves the suite's time. Tests marked with one xdist_group
# (the fault runs) go to one process, one after the other. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: $(TEST_STAMP) system-deps
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadgroup

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

bench: $(TEST_STAMP)
	$(BIN)/python bench/run.py

# The long fuzz run; `make test` runs a short form of it (tests/fuzz/test_fuzz.py).
FUZZ_FRAMES ?= 1000000
FUZZ_SEED ?= 1
fuzz: $(TEST_STAMP)
	$(BIN)/python tests/fuzz/fuzzer.py --frames $(FUZZ_FRAMES) --seed $(FUZZ_SEED)

# The long fault-injection run (docs/CHAOS.md); `make test` runs a short form of it
# (tests/chaos/test_chaos.py, marked `chaos`). CHAOS_ARGS passes more flags, e.g.
# CHAOS_ARGS="--replication-factor 3 --min-insync-replicas 2 --seed 42".
DURATION ?= 600
CHAOS_ARGS ?=
chaos: $(TEST_STAMP) system-deps
	$(BIN)/pytest -q -p no:cacheprovider -m long
	PYTHONPATH=tests $(BIN)/python -m chaos --duration $(DURATION) $(CHAOS_ARGS)

# Seeds of the deterministic simulation (docs/ARCHITECTURE.md, "Deterministic simulation");
# `make test` runs 20 short ones (tests/sim), `make chaos` 1000. A failure prints the command
# that replays it.
SIM_SEEDS ?= 5000
SIM_SEED ?= 1
sim: $(TEST_STAMP)
	$(BIN)/python -m odradek.sim --seed $(SIM_SEED) --seeds $(SIM_SEEDS)

clean:
	rm -rf $(VENV) data
