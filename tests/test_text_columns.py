"""Text columns held as Arrow-backed strings (recurstudy.io.TEXT) give what object columns give.

The workflow reads CSV and its own Parquet files with text as :data:`~recurstudy.io.TEXT`;
users and tests call the library with object columns. The Arrow paths of the id lookups
(``positions``, ``factorize``, ``is_ascending``) are compared with pandas' on the same values,
and validation, derivation and every model of the demo config are run both ways.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import recurstudy.io as rio
from recurstudy.config import load_config
from recurstudy.derive import derive_all
from recurstudy.models import fit_spec, model_specs
from recurstudy.validate import validate_cohort

CASES = [
    ["P1", "P2", "P3"],
    ["b", "a", "b", "c", "a"],
    ["x", np.nan, "y", np.nan, "x"],
    ["Ünï", "日本", "ünï", " P1", "P1", "P1 "],
    [],
    ["only"],
    ["a", "a", "a"],
    ["a", "b", np.nan],
]


def _both(values):
    obj = pd.Series(values, dtype=object)
    return obj, obj.astype(rio.TEXT)


@pytest.mark.parametrize("values", CASES)
def test_factorize_is_pandas_factorize(values):
    obj, text = _both(values)
    codes, uniques = rio.factorize(text)
    want_codes, want_uniques = pd.factorize(obj)
    assert codes.tolist() == want_codes.tolist()
    assert list(uniques) == list(want_uniques)


@pytest.mark.parametrize("values", CASES)
def test_is_ascending_is_pandas_monotonic(values):
    obj, text = _both(values)
    assert rio.is_ascending(text) == obj.is_monotonic_increasing


@pytest.mark.parametrize("values", CASES)
def test_positions_is_get_indexer(values):
    keys = pd.Series(["a", "P1", "x", "日本", "c", "ünï"], dtype=object)
    obj, text = _both(values)
    want = pd.Index(keys).get_indexer(obj)
    assert rio.positions(keys.astype(rio.TEXT), text).tolist() == want.tolist()
    assert rio.positions(keys, obj).tolist() == want.tolist()  # the pandas path
    assert rio.positions(keys.astype(rio.TEXT), text).dtype == np.int64


def test_read_parquet_gives_text_and_keeps_other_types(tmp_path):
    frame = pd.DataFrame(
        {
            "participant_id": pd.Series(["P1", np.nan, "P3"], dtype=object),
            "arm": pd.Categorical(["control", "intervention", "control"]),
            "n": [1, 2, 3],
            "when": pd.to_datetime(["2025-01-01", "2025-01-02", None]),
        }
    )
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    back = rio.read_parquet(tmp_path / "t.parquet")
    assert back["participant_id"].dtype == rio.TEXT
    assert back["participant_id"].isna().tolist() == [False, True, False]
    assert isinstance(back["arm"].dtype, pd.CategoricalDtype)
    assert back["n"].dtype == np.int64 and back["when"].dtype == "datetime64[ns]"
    pd.testing.assert_frame_equal(back.astype({"participant_id": object}), frame)


@pytest.fixture(scope="module")
def demo_tables(request):
    root = request.config.rootpath
    config = load_config(root / "config/config.yaml")
    outcome = validate_cohort(config, root)
    assert outcome.ok
    return config, outcome.tables


def _as_object(frame: pd.DataFrame) -> pd.DataFrame:
    text = [c for c in frame.columns if isinstance(frame[c].dtype, pd.StringDtype)]
    return frame.astype(dict.fromkeys(text, object))


def test_validated_demo_text_is_arrow_backed(demo_tables):
    _, tables = demo_tables
    p = tables["participants"]
    assert p["participant_id"].dtype == rio.TEXT and p["arm"].dtype == rio.TEXT


def test_derive_and_every_model_agree_on_text_and_object_columns(demo_tables):
    config, tables = demo_tables
    text = derive_all(tables["participants"], tables["episodes"], config)
    obj = derive_all(_as_object(tables["participants"]), _as_object(tables["episodes"]), config)
    assert text["counting_process"]["participant_id"].dtype == rio.TEXT
    for name in text:
        pd.testing.assert_frame_equal(_as_object(text[name]), obj[name])
    data_text = {**text, **tables}
    data_obj = {**obj, **{k: _as_object(v) for k, v in tables.items()}}
    fitted = 0
    for spec in model_specs(config):
        a, b = fit_spec(spec, data_text), fit_spec(spec, data_obj)
        pd.testing.assert_frame_equal(a.table, b.table, rtol=1e-12)
        assert sorted(a.extras) == sorted(b.extras)
        for key in a.extras:
            pd.testing.assert_frame_equal(a.extras[key], b.extras[key], rtol=1e-12)
        fitted += bool(a.table["converged"].all())
    assert fitted >= 10  # the demo's models converge: the comparison is of real fits
