# collateral-keeper: the two commands are `make demo` and `make test`; both set up what they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help

SOLC_VERSION := 0.8.28
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
PY := $(BIN)/python
APE := $(BIN)/ape
# The solc-js wrapper is linked inside this checkout's venv, never in ~/.solcx: another checkout (a clone under
# /tmp, a CI workspace) must not re-point or break this one's compiler. Every Python of the venv finds it through
# SOLCX_BINARY_PATH, set by a .pth file at interpreter start-up (see $(SOLCX_PTH)), so `ape` works outside make too.
SOLCX_DIR := $(CURDIR)/$(VENV)/solcx
SOLCX_PTH = $(shell test -x $(PY) && $(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/collateral_keeper_solcx.pth
export PATH := $(BIN):$(PATH)
export SOLCX_BINARY_PATH := $(SOLCX_DIR)

.PHONY: help setup compile test test-unit test-long demo lint lint-imports gas gas-check bench clean

help:
	@echo "make demo   keeper demo: a crash replayed on a local Anvil against 200 accounts and the keeper, with a report"
	@echo "make test   run the whole test suite against a real Anvil (tests/unit/ included): what CI runs"
	@echo "make test-unit  the pure tests of tests/unit/ only: no Anvil, no ape, no compiled contracts; seconds"
	@echo "make lint   ruff, format check, mypy (strict on keeper/), the import contract, compile and slither"
	@echo "make gas    measure the gas of every user operation and rewrite gas-snapshot.json"
	@echo "make bench  gas check and the keeper scan benchmark (1,000 and 10,000 accounts)"
	@echo "make setup  install everything (idempotent; the other targets call it)"

# ---- setup (idempotent: each step re-runs only when its inputs change) ----

setup: node_modules/.installed $(VENV)/.installed $(BIN)/anvil $(SOLCX_DIR)/solc-v$(SOLC_VERSION) .build/thirdparty/.compiled

# `npm ci`: installs exactly the lock and never rewrites it (the lock lists every platform's optional Anvil
# package, so it stays in sync on any machine).
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(VENV)/.installed: requirements.lock pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

# Anvil ships as a platform binary inside the npm package; ape-foundry looks for `anvil` on PATH. bin/anvil runs
# it without writing chain state to disk (see the script).
$(BIN)/anvil: bin/anvil node_modules/.installed $(VENV)/.installed
	@ln -sf $(CURDIR)/bin/anvil $@
	@$@ --version | head -1

# py-solc-x (used by ape-solidity) accepts any executable named solc-vX.Y.Z in its folder.
$(SOLCX_DIR)/solc-v$(SOLC_VERSION): bin/solc node_modules/.installed $(VENV)/.installed
	@mkdir -p $(SOLCX_DIR)
	@ln -sf $(CURDIR)/bin/solc $@
	@echo 'import os; os.environ["SOLCX_BINARY_PATH"] = "$(SOLCX_DIR)"' > $(SOLCX_PTH)
	@$@ --version | tail -1

# Real third-party contracts for the tests (Chainlink's proxy, aggregators and uptime feeds), compiled from
# node_modules with the solc-js release their sources ask for; tests/thirdparty.py caches them by input hash.
.build/thirdparty/.compiled: tests/thirdparty.py node_modules/.installed $(VENV)/.installed
	@$(PY) tests/thirdparty.py
	@touch $@

compile: setup
	$(APE) compile

# ---- the two commands ----

test: setup
	$(APE) test tests/ -p no:cacheprovider

# The pure tier: tests/unit/ with plain pytest. It needs only the venv; `-p no:ape_test` keeps ape's pytest plugin
# (and its provider) out and --confcutdir keeps tests/conftest.py (the deployed system) from loading. The `slow`
# cases are left to `make test`.
test-unit: $(VENV)/.installed
	$(PY) -m pytest -p no:ape_test -p no:cacheprovider --confcutdir=tests/unit -m "not slow" tests/unit

test-long: setup
	CK_LONG=1 $(APE) test tests/ -p no:cacheprovider

demo: setup
	$(BIN)/keeper demo

# ---- quality ----

lint: setup
	$(BIN)/ruff check keeper scripts tests benchmarks
	$(BIN)/ruff format --check keeper scripts tests benchmarks
	$(BIN)/mypy
	$(MAKE) --no-print-directory lint-imports
	$(APE) compile
	$(PY) scripts/_slither.py

# The import contract of pyproject.toml's [tool.importlinter]: the layers of keeper/ and what keeper.core and the
# base-install layers may not import.
lint-imports: $(VENV)/.installed
	$(BIN)/lint-imports --no-cache

gas: setup
	$(PY) benchmarks/gas.py --write

gas-check: setup
	$(PY) benchmarks/gas.py --check

bench: gas-check
	$(PY) benchmarks/scan.py --accounts 1000
	$(PY) benchmarks/scan.py --accounts 10000
	$(PY) benchmarks/montecarlo.py --paths 1000000 --steps 1440
	$(PY) benchmarks/feed_history.py --rounds 720

clean:
	rm -rf .build contracts/.cache
