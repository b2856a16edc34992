# cvrepro: `make repro` runs the pipeline, `make test` the tests. `make help` lists all.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_SEED ?= 0
DEMO_IMAGES ?= 800
# Stage commands in dvc.yaml call `cvrepro`: put the venv first on PATH for them.
export PATH := $(abspath $(BIN)):$(PATH)

.DEFAULT_GOAL := help
.PHONY: help venv data repro test test-fast test-cpu-level bench clean-venv

help: ## list the targets with what they do
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -e '.[test]'
	touch $@

venv: $(BIN)/.installed ## create .venv (if missing) and install the project and its pinned dependencies

data: venv ## if no dataset is tracked yet: lay down the demo dataset (unless data/raw has images) and `dvc add` it
	@if [ ! -f data/raw.dvc ] || [ ! -f data/labels.dvc ]; then \
	  if [ -z "$$(ls -A data/raw 2>/dev/null)" ]; then \
	    cvrepro demo --seed $(DEMO_SEED) --images $(DEMO_IMAGES) || exit 1; \
	  fi; \
	  dvc add data/raw data/labels || exit 1; \
	fi

repro: data ## compose params.yaml from conf/ and run the pipeline (dvc repro)
	cvrepro compose
	dvc repro

# pytest workers: one per core (pytest-xdist; a test file stays on one worker, so its module fixtures are built
# once; a third worker on 2 cores measured slower). PYTEST_WORKERS=0 runs everything in this process.
PYTEST_WORKERS ?= auto
PYTEST_PARALLEL := -n $(PYTEST_WORKERS) --dist loadfile

test: venv ## run the whole test suite (the slow end-to-end tests included), on all cores
	$(BIN)/pytest $(PYTEST_PARALLEL) --durations=15

test-fast: venv ## run the tests without the slow end-to-end ones
	$(BIN)/pytest $(PYTEST_PARALLEL) -m "not slow"

# The in-process tests train at the template's CPU level (avx2), which on an AVX2-only CPU is also the
# native one, so a pin that does not hold goes unseen there. This runs the fast tests once more at
# `default` (SSE4), below every x86-64 CPU's native level: a lost pin then fails on any machine.
test-cpu-level: venv ## run the fast tests with the CPU kernels pinned to `default` instead of avx2
	CVREPRO_TEST_CPU_ISA=default $(BIN)/pytest $(PYTEST_PARALLEL) -m "not slow"

bench: venv ## run the benchmarks under benchmarks/
	@for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean-venv: ## remove .venv
	rm -rf $(VENV)
