# r1kit developer commands. `make help` lists them.
#
# Everything runs inside a virtual environment at $(VENV) (default .venv, override with
# R1KIT_VENV) that `make setup` creates and fills: torch==2.13.0, the dev extra, and r1kit itself
# built by maturin against that torch. Every target that needs it depends on setup, so a fresh
# clone needs nothing but `make test`.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= $(or $(R1KIT_VENV),.venv)
VENV := $(abspath $(VENV))
BIN := $(VENV)/bin
# torch-sys's build script calls `python` when VIRTUAL_ENV is set, so it finds the venv's torch.
export VIRTUAL_ENV := $(VENV)
export PATH := $(BIN):$(PATH)
export LIBTORCH_USE_PYTORCH := 1
TORCH_LIB = $(shell $(BIN)/python -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
# cargo test binaries link libtorch directly; they find it in the venv's torch at run time.
CARGO_TEST_ENV = LD_LIBRARY_PATH=$(TORCH_LIB)$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH}

STAMP := $(VENV)/.r1kit-deps
# Python sources are installed editable: only the Rust side needs a rebuild when it changes.
SOURCES := $(shell find src -type f -name '*.rs') Cargo.toml pyproject.toml


.PHONY: help setup test test-rust test-python lint fmt bench wheel clean demo

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml tests/requirements-verl.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# torch first: the Rust build links the libtorch inside it. The dev extra comes with r1kit below.
	$(BIN)/python -m pip install --quiet "torch==2.13.0" "maturin>=1.7,<2"
	@# verl 0.9.1 and the pinned minimum its core_algos import needs: the parity reference.
	$(BIN)/python -m pip install --quiet --no-deps -r tests/requirements-verl.txt
	touch $(STAMP)

BUILT := $(VENV)/.r1kit-built
setup: $(STAMP) ## Create the venv (torch 2.13.0, dev extra) and build r1kit into it (idempotent)
	@# Rebuild when the sources changed or the venv's editable install points at another checkout.
	@if [ ! -f $(BUILT) ] || [ "$$(cat $(BUILT))" != "$(CURDIR)" ] \
	    || [ -n "$$(find $(SOURCES) -newer $(BUILT) -print -quit)" ]; then \
	  $(BIN)/maturin develop --release --extras dev && echo "$(CURDIR)" > $(BUILT); \
	else echo "r1kit is up to date in $(VENV)"; fi

fmt: ## Format Rust and Python sources
	cargo fmt
	$(BIN)/ruff format python tests benches examples
	$(BIN)/ruff check --fix python tests benches examples

test-rust: setup ## cargo fmt --check, clippy (with and without bindings), cargo test
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --release --lib --features python,pyo3/extension-module -- -D warnings
	$(CARGO_TEST_ENV) cargo test

test-python: setup ## pytest (tests/ and the docstring examples)
	$(BIN)/python -m pytest -q tests python/r1kit --doctest-modules; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; exit 0; fi; exit $$rc

test: test-rust lint test-python ## Everything CI checks: Rust lints and tests, Python lints, pytest

lint: setup ## ruff, mypy --strict on python/, stubtest of the extension's stubs
	$(BIN)/ruff check python tests benches examples
	$(BIN)/ruff format --check python tests benches examples
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest r1kit._core --allowlist .stubtest-allowlist

demo: setup ## Train both recipes (Parallel-R1, ZeroSearch) on CPU; writes runs/parallel-r1/, runs/zerosearch/
	$(BIN)/python -m r1kit.train.cli demo all

bench: setup ## Criterion benches (Rust) and Python comparisons against today's baselines
	$(CARGO_TEST_ENV) cargo bench --bench schedule -- --warm-up-time 1 --measurement-time 3
	$(BIN)/python benches/run.py

wheel: setup ## Build a release wheel into dist/
	$(BIN)/maturin build --release --out dist

clean: ## Remove build outputs (keeps the venv)
	cargo clean
	rm -rf dist .pytest_cache .mypy_cache .ruff_cache
