"""Shared test helpers, and the one demo workflow run of a test session (`demo_report`)."""

import json
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import recurstudy.models.base as _models_base

# In this process an unexpected exception inside a model's fit fails the test instead of
# becoming the model's failed row (recurstudy.models.base.strict_fits); expected failures go
# through NotEstimable either way.  The workflows the tests start run as a study's run does: a
# model's error is its failed row and the other models go on.
_models_base.STRICT_FITS_DEFAULT = True

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def run_workflow(
    run: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """snakemake on the run directory, the way users run it on their own data (`env`: extra
    environment variables)."""
    env = dict(
        os.environ,
        PATH=f"{SNAKEMAKE.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **(env or {}),
    )
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(run)]
    cmd += ["--configfile", str(run / "config.yaml"), "--cores", "2", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1500, env=env)


@pytest.fixture(scope="session")
def demo_report(tmp_path_factory) -> Path:
    """The whole workflow run once per test session on the demo cohort (20 power and 20
    bootstrap replicates),
    the way users run it: from its own folder, writing nothing into the repository."""
    import yaml

    run = tmp_path_factory.mktemp("demo_run")
    shutil.copytree(REPO / "data/demo", run / "cohort")
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["data"] = {
        "participants": "cohort/participants.csv",
        "episodes": "cohort/episodes.csv",
        "pain_scores": "cohort/pain_scores.csv",
    }
    config["power"] = {
        "replicates": 20,
        "chunk_size": 10,
        "seed": 20261126,
        "alpha": 0.05,
        "mde_grid": [0.2, 0.4, 0.6],
        "grid_replicates": 10,
        "pain_replicates": 2,
    }
    config["bootstrap"] = {"replicates": 20, "chunk_size": 10, "seed": 20261204, "bca": False}
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    before = sorted(p.name for p in REPO.iterdir())
    proc = run_workflow(run)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert sorted(p.name for p in REPO.iterdir()) == before  # nothing written into the repo
    return run


@pytest.fixture(scope="session")
def demo_run(demo_report) -> Path:
    """The same shared run, under the name the workflow tests use."""
    return demo_report


@pytest.fixture
def repo() -> Path:
    """The repository's root folder."""
    return REPO


@cache
def r_reference(path: Path) -> dict:
    """An R reference JSON file, parsed once."""
    with open(path) as fh:
        return json.load(fh)


@cache
def _read_cohort(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    df["arm"] = pd.Categorical(df["arm"], categories=["control", "intervention"])
    return df


def read_cohort(path: Path) -> pd.DataFrame:
    """A fixture CSV with ``arm`` categorical (control, intervention); a fresh copy each call."""
    return _read_cohort(path).copy()


def num(values) -> np.ndarray:
    """R's JSON (null for NA) as floats."""
    return np.array([np.nan if v is None else v for v in np.atleast_1d(values)], dtype=float)


# Fixtures whose use means a whole workflow run: tests using them are marked `workflow` and are
# left out of `make test-fast`.
WORKFLOW_FIXTURES = {"demo_report", "demo_run", "custom_study", "demo_bootstrap", "tiny_report"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if WORKFLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.workflow)
