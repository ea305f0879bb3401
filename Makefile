# vaxis: the two commands are `make reproduce` and `make test`; both work on a fresh clone.
# They create .venv if missing, install vaxis (CPU torch first, so pip never pulls a CUDA build),
# fetch the embedded model, then run.
#   PROFILE=demo|smoke|paper   profile for `make reproduce` (default demo)
#   PYTHON=python3.11          interpreter used to create .venv
#   TORCH_SPEC="torch==2.13.0" the torch requirement installed first; on a CPU machine without the
#                              local CPU wheel add TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu"
# `make lab` installs the notebooks extra (JupyterLab) and opens JupyterLab on notebooks/ with the
# `vaxis` kernel (this .venv's Python), which `make install` registers too (papermill and nbval start the
# kernel the notebooks name). Extra JupyterLab arguments: LAB_ARGS="--no-browser --port 8888".

PYTHON ?= python3
VENV ?= .venv
PROFILE ?= demo
# the run folder of `make reproduce` and `make report`
RUN_DIR ?= runs/$(PROFILE)
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
EXTRAS ?= test
LAB_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.vaxis-installed-$(EXTRAS)
LAB_STAMP := $(VENV)/.vaxis-installed-notebooks
# The kernel every notebook names (metadata.kernelspec), registered inside .venv (--sys-prefix), never in ~.
KERNEL := vaxis
KERNEL_SPEC := $(VENV)/share/jupyter/kernels/$(KERNEL)/kernel.json
# Registers the kernel unless this .venv's Python is already the one it runs (a shell test: no cost).
REGISTER_KERNEL = grep -qF '"$(abspath $(BIN))/python"' $(KERNEL_SPEC) 2>/dev/null || \
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "$(KERNEL) (.venv)"

.PHONY: install reproduce report test lint format benchmark clean-runs fetch-model lab

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# One stamp per set of extras: .venv/.vaxis-installed-test (EXTRAS), .venv/.vaxis-installed-notebooks (lab).
$(VENV)/.vaxis-installed-%: pyproject.toml | $(BIN)/python
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[$*]"
	touch $@

install: $(STAMP) fetch-model
	@$(REGISTER_KERNEL)

fetch-model: $(STAMP)
	$(BIN)/python -m vaxis fetch-model

# JupyterLab on notebooks/, the notebooks opening with the vaxis kernel; e.g. LAB_ARGS="--no-browser --port 8888".
lab: $(LAB_STAMP)
	@$(REGISTER_KERNEL)
	$(BIN)/python -m vaxis fetch-model
	$(BIN)/jupyter lab --notebook-dir=notebooks $(LAB_ARGS)

# The run, then its report (RUN_DIR/report/index.html); the report of a complete run of the profile's own model is
# also copied to docs/$(PROFILE)/, as the figures are to figures/.
reproduce: install
	$(BIN)/python -m vaxis run --profile $(PROFILE) --run-dir $(RUN_DIR) -p publish_figures True
	$(BIN)/python -m vaxis report $(RUN_DIR) --publish

# The static HTML report of a run: RUN_DIR/report/index.html (RUN_DIR defaults to runs/$(PROFILE)).
report: $(STAMP)
	$(BIN)/python -m vaxis report $(RUN_DIR)

# Unit tests, the notebooks through papermill (tests/test_notebooks.py) and through nbval (lax: every cell
# must run), all in the smoke profile; NBVAL_PROFILE=demo runs the nbval part on the embedded model.
# TEST_WORKERS pytest-xdist processes (one per core; 0 runs everything in this process): the notebooks' group runs
# on one of them (tests/conftest.py), one torch thread each so that the workers do not fight over the cores.
NBVAL_PROFILE ?= smoke
TEST_WORKERS ?= 2
test: install
	$(BIN)/python -m ruff check vaxis tests benchmarks scripts
	OMP_NUM_THREADS=1 VAXIS_PROFILE=$(NBVAL_PROFILE) VAXIS_RUN_DIR=$(CURDIR)/runs/nbval-$(NBVAL_PROFILE) \
		$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup tests notebooks \
		--nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg

lint: install
	$(BIN)/python -m ruff check vaxis tests benchmarks scripts
	$(BIN)/python -m ruff format --check vaxis tests benchmarks scripts

format: install
	$(BIN)/python -m ruff format vaxis tests benchmarks scripts
	$(BIN)/python -m ruff check --fix vaxis tests benchmarks scripts

benchmark: install
	$(BIN)/python benchmarks/extract.py

clean-runs:
	rm -rf runs
