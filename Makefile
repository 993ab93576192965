# Two entry points: `make report` (whole workflow on the demo cohort) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# Snakemake's notebook: rules call papermill/jupyter from PATH, so the venv goes first on it.
export PATH := $(BIN):$(PATH)
CORES ?= 2

.PHONY: report test venv lint lock demo clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

report: venv
	$(BIN)/snakemake --cores $(CORES)

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check src tests workflow/scripts benchmarks
	$(BIN)/snakemake --lint

# Regenerate the lock after changing dependencies in pyproject.toml (needs uv).
lock:
	uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 -o requirements.lock

# Regenerate the shipped demo cohort (same seed, same bytes).
demo: venv
	$(BIN)/recurstudy simulate --preset demo --out data/demo

clean:
	rm -rf results reports/*.html reports/*.ipynb reports/manifest.json .snakemake
