# Two entry points: `make report` (whole workflow on the demo cohort) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# Snakemake's notebook: rules call papermill/jupyter from PATH, so the venv goes first on it.
export PATH := $(BIN):$(PATH)
CORES ?= 2

.PHONY: report test test-fast venv lint lock demo clean browser

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

report: venv
	$(BIN)/snakemake --cores $(CORES)

test: venv browser
	$(BIN)/python -m pytest -q

# Everything that does not need a whole workflow run (the development loop: under a minute).
test-fast: venv
	$(BIN)/python -m pytest -q -m "not workflow" -p no:cacheprovider

# Headless Chromium (Debian package) for tests/test_browser.py, installed when missing and when
# we may (root with apt-get); otherwise that one test is skipped and says why.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) \
	      >/dev/null || echo "make browser: could not install chromium"; \
	  else echo "make browser: chromium missing (apt-get install chromium as root)"; fi; \
	fi

lint: venv
	$(BIN)/ruff check src tests workflow/scripts benchmarks
	$(BIN)/ruff format --check src tests workflow/scripts benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint
	$(BIN)/mypy

# Regenerate the lock after changing dependencies in pyproject.toml (needs uv).
lock:
	uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 -o requirements.lock

# Regenerate the shipped demo cohort (same seed, same bytes).
demo: venv
	$(BIN)/recurstudy simulate --preset demo --out data/demo

clean:
	rm -rf results reports/*.html reports/*.ipynb reports/*.json reports/*.png reports/figures reports/tables .snakemake
