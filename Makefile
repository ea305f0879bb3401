# vaxis: the two commands are `make reproduce` and `make test`; both work on a fresh clone.
# They create .venv if missing, install vaxis (CPU torch first, so pip never pulls a CUDA build),
# fetch the embedded model, then run.
#   PROFILE=demo|smoke|paper   profile for `make reproduce` (default demo)
#   PYTHON=python3.11          interpreter used to create .venv
#   TORCH_SPEC="torch==2.13.0" the torch requirement installed first; on a CPU machine without the
#                              local CPU wheel add TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu"

PYTHON ?= python3
VENV ?= .venv
PROFILE ?= demo
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
EXTRAS ?= test
BIN := $(VENV)/bin
STAMP := $(VENV)/.vaxis-installed-$(EXTRAS)

.PHONY: install reproduce test lint format benchmark clean-runs fetch-model

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

install: $(STAMP) fetch-model

fetch-model: $(STAMP)
	$(BIN)/python -m vaxis fetch-model

reproduce: install
	$(BIN)/python -m vaxis run --profile $(PROFILE) -p publish_figures True

# Unit tests, the notebooks through papermill (tests/test_notebooks.py) and through nbval (lax: every cell
# must run), all in the smoke profile; NBVAL_PROFILE=demo runs the nbval part on the embedded model.
NBVAL_PROFILE ?= smoke
test: install
	$(BIN)/python -m ruff check vaxis tests benchmarks scripts
	VAXIS_PROFILE=$(NBVAL_PROFILE) VAXIS_RUN_DIR=$(CURDIR)/runs/nbval-$(NBVAL_PROFILE) \
		$(BIN)/python -m pytest -q tests notebooks --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg

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
