# Two commands do all set-up on a fresh machine:
#   make example   compile the bundled CryptoNets-style digits model and run one encrypted inference
#   make test      run the test suite
# Both create .venv with Python 3.10 first (OpenFHE's wheel is CPython 3.10 only).

PYTHON310 ?= $(shell ./scripts/find-python310)
VENV      := .venv
PY        := $(VENV)/bin/python
HEC       := $(VENV)/bin/hec
export OMP_NUM_THREADS ?= 1
# The train extra (PyTorch, ~5 GB) lets the tests cover fine-tuning and ViT training;
# `make setup EXTRAS=test` leaves it out (those tests then skip).
EXTRAS    ?= test,train

.PHONY: setup example test test-fast lint bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	@test -n "$(PYTHON310)" || { echo "error: python3.10 not found; install CPython 3.10 (e.g. pyenv install 3.10) and retry" >&2; exit 3; }
	$(PYTHON310) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

setup: $(VENV)/.installed

example: setup
	$(HEC) compile examples/cryptonets_digits/model.onnx -o out/cryptonets
	$(HEC) run out/cryptonets --input examples/cryptonets_digits/sample.npy --compare-onnx examples/cryptonets_digits/model.onnx

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples

bench: setup
	$(PY) benchmarks/run.py

clean:
	rm -rf out $(VENV) .pytest_cache
