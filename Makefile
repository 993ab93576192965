# Two entry points: `make report` (whole workflow on the demo cohort) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# Snakemake's notebook: rules call papermill/jupyter from PATH, so the venv goes first on it.
export PATH := $(BIN):$(PATH)
CORES ?= 2

.PHONY: report test test-fast test-cluster venv lint lock demo clean browser

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

# Everything that does not need a whole workflow run (the development loop: under a minute),
# spread over the machine's cores with pytest-xdist.
test-fast: venv
	$(BIN)/python -m pytest -q -m "not workflow" -p no:cacheprovider -n auto

# The demo on a real single-node SLURM cluster that the test starts on this machine
# (tests/cluster/start_slurm.sh), compared byte for byte with a local run. Installs Debian's
# slurm-wlm and munge when missing and we may (root with apt-get); otherwise says so and skips.
test-cluster: venv
	@if [ ! -x /usr/sbin/slurmctld ] || [ ! -x /usr/sbin/munged ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge) \
	      >/dev/null || echo "make test-cluster: could not install slurm-wlm and munge"; \
	  fi; \
	fi
	@if [ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/munged ]; then \
	  RECURSTUDY_CLUSTER_TEST=1 $(BIN)/python -m pytest -q -rs -p no:cacheprovider tests/test_cluster.py; \
	else \
	  echo "make test-cluster: skipped: slurm-wlm and munge missing (apt-get install slurm-wlm munge as root)"; \
	fi

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
	uv pip compile pyproject.toml --extra dev --extra slurm --universal --python-version 3.11 -o requirements.lock

# Regenerate the shipped demo cohort (same seed, same bytes).
demo: venv
	$(BIN)/recurstudy simulate --preset demo --out data/demo

clean:
	rm -rf results reports/*.html reports/*.ipynb reports/*.json reports/*.png reports/figures reports/tables .snakemake
