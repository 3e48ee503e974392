# Two commands do all set-up on a fresh machine:
#   make example   compile the bundled CryptoNets-style digits model and run one encrypted inference
#   make test      run the test suite
#   make bench-peers   the benchmark beside TenSEAL and Concrete ML (their own .venv-peers) and
#                      Orion (.venv-orion, CPython 3.11)
# Both create .venv with Python 3.10 first (OpenFHE's wheel is CPython 3.10 only).

PYTHON310 ?= $(shell ./scripts/find-python310)
PYTHON311 ?= $(shell ./scripts/find-python311)
VENV      := .venv
PY        := $(VENV)/bin/python
HEC       := $(VENV)/bin/hec
export OMP_NUM_THREADS ?= 1
# The train extra (PyTorch, ~5 GB) lets the tests cover fine-tuning and ViT training;
# `make setup EXTRAS=test` leaves it out (those tests then skip). The ray extra runs the
# cluster tests (a two-node Ray cluster on loopback).
EXTRAS    ?= test,train,bench,ray
# The peers (TenSEAL, Concrete ML) pin numpy/torch versions hec's pins exclude: their own venv.
PEERS_VENV := .venv-peers
# Orion's wheel (orion-fhe) is CPython 3.11 only: a venv of its own.
ORION_VENV := .venv-orion
# e.g. make bench-peers BENCH_ARGS="--model cryptonets --images 10"
BENCH_ARGS ?=

.PHONY: setup example test test-fast lint bench bench-peers peers clean

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
	$(VENV)/bin/mypy src

bench: setup
	$(PY) benchmarks/run.py $(BENCH_ARGS)

$(PEERS_VENV)/.installed: benchmarks/peers/requirements.txt
	@test -n "$(PYTHON310)" || { echo "error: python3.10 not found; install CPython 3.10 (e.g. pyenv install 3.10) and retry" >&2; exit 3; }
	$(PYTHON310) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q --upgrade pip
	$(PEERS_VENV)/bin/python -m pip install -q -r benchmarks/peers/requirements.txt
	touch $@

$(ORION_VENV)/.installed: benchmarks/peers/requirements-orion.txt
	@test -n "$(PYTHON311)" || { echo "error: python3.11 not found (Orion's wheel is CPython 3.11 only); install it (e.g. pyenv install 3.11) and retry" >&2; exit 3; }
	$(PYTHON311) -m venv $(ORION_VENV)
	$(ORION_VENV)/bin/python -m pip install -q --upgrade pip
	$(ORION_VENV)/bin/python -m pip install -q -r benchmarks/peers/requirements-orion.txt
	touch $@

peers: $(PEERS_VENV)/.installed $(ORION_VENV)/.installed

# Latency rows of every model beside the peers (batch packing and deployment left out).
bench-peers: setup peers
	$(PY) benchmarks/run.py --peers all --packing slots --no-deploy $(BENCH_ARGS)

clean:
	rm -rf out $(VENV) $(PEERS_VENV) $(ORION_VENV) .pytest_cache
