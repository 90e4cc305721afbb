# sphere_bench — every target installs first (a no-op when pyproject.toml is unchanged).
#   make sweep   quick sweep on CPU (data, training, evaluation, report)
#   make test    the test suite (what CI runs)
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
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

# make sweep PRESET=<conf/experiment name>; extra Hydra overrides in SWEEP_ARGS, e.g.
#   make sweep PRESET=paper_fig7_four SWEEP_ARGS="hydra/launcher=joblib hydra.launcher.n_jobs=4"
PRESET ?= quick
# A preset may be several experiment files run one after the other.
EXPERIMENTS_quick := quick quick_cls
EXPERIMENTS_quick_paradigms := quick_paradigms quick_paradigms_cls
# ... or a script of its own (several multiruns, evaluation and its report), run instead.
SCRIPT_quick_equivariance := scripts/quick_equivariance.sh
# The report a preset writes: the quick preset's results/report.md reads only its own sweeps (other
# presets' records in results/runs or results/records leave it unchanged); quick_paradigms writes
# results/report_paradigms.md with its own module.
REPORT_MODULE_quick_paradigms := sphere_bench.report.paradigms
REPORT_ARGS_quick := --sweep quick_seg --sweep quick_cls
REPORT_MODULE ?= $(or $(REPORT_MODULE_$(PRESET)),sphere_bench.report)
SWEEP_ARGS ?=
REPORT_ARGS ?= $(REPORT_ARGS_$(PRESET))
# The report reads the records of this machine's runs, or the committed snapshot on a fresh clone.
REPORT_RUNS ?= $(if $(wildcard results/runs/*/*.json),results/runs,results/records)

.PHONY: install test sweep sweep_equivariance report data bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]" 2>&1 \
	  | { grep -v "is ignored: it is neither a file nor a directory" || true; }
	@touch $@

test: install
	$(PY) -m pytest -q

# Hydra multiruns of the preset's experiment files into results/runs/ (finished jobs are skipped
# on a rerun), the report over every record there, and a snapshot of the records in
# results/records/ (versioned with the report; a sweep's snapshot is replaced, never merged).
# A preset with a script runs the script with SWEEP_ARGS instead (quick_equivariance: six
# multiruns, the ensembles and its report and record snapshot in results/equivariance/).
sweep: install
ifneq ($(SCRIPT_$(PRESET)),)
	PY=$(PY) $(SCRIPT_$(PRESET)) $(SWEEP_ARGS)
else
	@for e in $(or $(EXPERIMENTS_$(PRESET)),$(PRESET)); do \
	  echo "== python -m sphere_bench.train -m experiment=$$e $(SWEEP_ARGS)"; \
	  $(PY) -m sphere_bench.train -m experiment=$$e $(SWEEP_ARGS) || exit 1; done
	$(MAKE) --no-print-directory report REPORT_RUNS=results/runs
	@for d in results/runs/*/; do n=$$(basename $$d); mkdir -p results/records/$$n; \
	  rm -f results/records/$$n/*.json; cp $$d*.json results/records/$$n/ 2>/dev/null || true; done
endif

# Former name of `make sweep PRESET=quick_equivariance`.
sweep_equivariance:
	$(MAKE) --no-print-directory sweep PRESET=quick_equivariance

report: install
	$(PY) -m $(REPORT_MODULE) --runs $(REPORT_RUNS) --out results $(REPORT_ARGS)

# Preview figures of every dataset (a few test samples each, paper bandwidths).
data: install
	for d in mnist_cls fashion_cls mnist_seg mnist_seg4 fashion_seg; do \
	  $(PY) -m sphere_bench.data data=$$d preview_only=true || exit 1; done

# Speed benchmarks → results/bench_data.{json,md} (dataset generation), results/bench.{json,md}
# (every zoo model, batch 1 and 32) and results/bench_models.{json,md} (S2CNN and transforms vs
# the reference). On a GPU machine the model benchmarks use it (CUDA events).
bench: install
	$(PY) scripts/bench_data.py $(BENCH_ARGS)
	$(PY) scripts/bench_zoo.py $(BENCH_ZOO_ARGS)
	$(PY) scripts/bench_models.py $(BENCH_MODELS_ARGS)

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf outputs multirun data/cache
