"""Shared test helpers."""

import json
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


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
WORKFLOW_FIXTURES = {"demo_report", "demo_run"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if WORKFLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.workflow)
