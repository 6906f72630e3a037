# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# TORCH is installed first when the venv has no torch: on CPU-only machines the pinned CPU build avoids a
# multi-GB CUDA download. Override on a GPU machine, e.g. `make test TORCH="torch==2.5.1"`.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.s2s-installed
PYTEST_ARGS ?=

.PHONY: install test test-slow lint format demo bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install "$(TORCH)"
	$(BIN)/python -m pip install -e ".[dev,hf]"
	touch $(STAMP)

install: $(STAMP)

test: install
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

# pytest exits 5 when no test carries the marker; that is not a failure here.
test-slow: install
	$(BIN)/python -m pytest -q -m "slow" $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: install
	$(BIN)/python -m recipes.translation recipes/configs/demo_multi30k.yaml

bench: install
	$(BIN)/python -m pip install -e ".[bench]"
	$(BIN)/python -m bench

bench-quick: install
	$(BIN)/python -m pip install -e ".[bench]"
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# On a CUDA machine, from the source folder (no install needed): the cuda tests, then the GPU comparison with
# Hugging Face; results.json/.md in GPU_OUT (see bench/gpu/__main__.py).
GPU_PYTHON ?= python3
GPU_OUT ?= bench/results/gpu
.PHONY: gpu-check
gpu-check:
	PYTHONUNBUFFERED=1 PYTHONPATH=. $(GPU_PYTHON) -m bench.gpu --out $(GPU_OUT)
