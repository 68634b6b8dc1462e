# svite-search: two commands get you going.
#   make demo   set up .venv (once) and run the quickstart study on the embedded digits data
#   make test   set up .venv (once) and run the test suite
# Set-up is idempotent: a second run reuses .venv and reinstalls only when pyproject.toml changed.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXTRAS ?= all
# CPU machines pin the CPU build of torch; with a CUDA GPU, pip picks the CUDA build itself.
CONSTRAINTS := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 || echo "-c constraints/cpu.txt")

export MLFLOW_DISABLE_TELEMETRY ?= true
export RAY_USAGE_STATS_ENABLED ?= 0
export MPLBACKEND ?= Agg
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test test-scaleout bench bench-search gpu-check clean help

help:
	@echo "make demo   set up and run the quickstart study (digits, CPU, a few minutes)"
	@echo "make test   set up and run the tests (all but the scale-out tier)"
	@echo "make test-scaleout  the scale-out tests: a Ray cluster, PostgreSQL, an MLflow server (several minutes)"
	@echo "make bench  set up and run the benchmark suite (writes reports/benchmarks/)"
	@echo "make bench-search  search efficiency of the samplers and early stopping (writes reports/benchmarks/search/)"
	@echo "make gpu-check  on a CUDA machine: GPU tests + GPU benchmarks (writes reports/benchmarks/gpu/)"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints/cpu.txt | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	@# -qq: errors still show; setuptools' editable-install notice (a warning) does not
	$(PY) -m pip install -qq $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/svite-search demo

# The scale-out tier starts real services (a multi-node Ray cluster, PostgreSQL, an MLflow server) and
# takes several minutes on its own: CI runs it as a second step, `make test-scaleout`.
# Two pytest workers (pytest-xdist), a test file per worker at a time: the suite waits on trial
# processes and Ray as much as it computes. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile -m "not scaleout" tests

test-scaleout: setup
	$(PY) -m pytest -q --durations=10 -m scaleout tests/scaleout

bench: setup
	$(PY) -m benchmarks.run_all

# Replays the committed table of learning curves (benchmarks/search_table.py records it); a few minutes.
bench-search: setup
	$(PY) -m benchmarks.bench_search

# No set-up step: a GPU image may have torch and timm but no network; the check runs what is installed
# (run from here, python -m finds the package even where it is not installed).
GPU_PY := $(if $(wildcard $(PY)),$(PY),$(PYTHON))
gpu-check:
	$(GPU_PY) -m benchmarks.gpu_check

clean:
	rm -rf $(VENV) runs .pytest_cache
