# sphere_bench — every target installs first (a no-op when pyproject.toml is unchanged).
#   make sweep   quick sweep on CPU (data, training, evaluation, report)
#   make test    the test suite (what CI runs)
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Planar MNIST/Fashion-MNIST root: $SPHERE_BENCH_DATA, else ../shared/datasets when present,
# else ./data (torchvision downloads there when online).
SPHERE_BENCH_DATA ?= $(if $(wildcard ../shared/datasets/MNIST/raw),$(abspath ../shared/datasets),data)
export SPHERE_BENCH_DATA
export WANDB_MODE ?= offline
export JAX_ENABLE_X64 ?= 1
export MPLBACKEND ?= Agg

PRESET ?= quick

.PHONY: install test sweep data bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $@

test: install
	$(PY) -m pytest -q

# Until the training sweep lands: generate a small dataset and its preview figures.
sweep: install
	$(PY) -m sphere_bench.data data=mnist_seg data.bandwidth=16 data.n_train=2000 data.n_val=200 data.n_test=1000 data.progress=false
	$(PY) -m sphere_bench.data data=mnist_seg4 preview_only=true

# Preview figures of every dataset (a few test samples each, paper bandwidths).
data: install
	for d in mnist_cls fashion_cls mnist_seg mnist_seg4 fashion_seg; do \
	  $(PY) -m sphere_bench.data data=$$d preview_only=true || exit 1; done

bench: install
	$(PY) scripts/bench_data.py $(BENCH_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check sphere_bench/data

clean:
	rm -rf outputs multirun data/cache
