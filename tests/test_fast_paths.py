"""The Arrow fast paths of reading and parsing give exactly what the pandas paths give.

io._read_csv_arrow, schemas._parse_plain_decimals_arrow, schemas._parse_iso_dates_arrow and
schemas._repeats_in_order either agree with pandas or decline (None) so that pandas decides;
each case here is read both ways and compared, including the cases the fast paths decline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import recurstudy.io as rio
import recurstudy.schemas as sc
from recurstudy.io import InputError

CSV_CASES = [
    b"a,b\n1,2\n3,4\n",
    b"a,b\r\n1,2\r\n3,\r\n",
    b"a,b\n1,2\n\n3,4",
    b"\na,b\n 1 , x\n",
    b'a,b\n"1,5","q""r"\n"l\nm",""\n',
    b'a,b\nx"y,2\n',
    b'a,b\n"z"w,2\n',
    b'a,b\n1,"open\n',
    b"a,b\n1,2\r3,4\n",
    b"a\n1\n   \n2\n",
    b"a,b\n1,2,3\n",
    b"a,b\n1\n",
    b"a,b\n",
]


def _read(path, fast: bool, monkeypatch):
    if not fast:
        monkeypatch.setattr(rio, "_read_csv_arrow", lambda data, header: None)
    try:
        return rio._read_csv(path)
    except InputError as exc:
        return exc.problem
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("data", CSV_CASES)
def test_arrow_csv_reads_as_pandas(tmp_path, monkeypatch, data):
    path = tmp_path / "t.csv"
    path.write_bytes(data)
    fast, slow = _read(path, True, monkeypatch), _read(path, False, monkeypatch)
    if isinstance(slow, str):
        assert fast == slow
        return
    pd.testing.assert_frame_equal(fast, slow)
    for col in fast:
        assert (fast[col].map(type) == slow[col].map(type)).all()


NUMBERS = [
    ["1", "2.5", np.nan],
    ["-0", "1"],
    ["-0", np.nan],
    ["-0.0", "1"],
    ["123456789012345", "0.1"],
    ["1234567890123456", "1"],
    ["1e3", "2"],
    [" 5", "6"],
    ["inf", "1"],
    ["007", "1.50"],
]


@pytest.mark.parametrize("values", NUMBERS)
def test_arrow_numbers_parse_as_pandas(monkeypatch, values):
    s = pd.Series(values, dtype=object)
    fast_num, fast_int = sc.parse_number(s), sc.parse_integer(s)
    monkeypatch.setattr(sc, "_parse_plain_decimals_arrow", lambda *a: None)
    slow_num, slow_int = sc.parse_number(s), sc.parse_integer(s)
    pd.testing.assert_series_equal(fast_num, slow_num)
    assert np.array_equal(np.signbit(fast_num.to_numpy()), np.signbit(slow_num.to_numpy()))
    pd.testing.assert_series_equal(fast_int, slow_int)


DATES = [
    ["2025-01-31", np.nan, "2024-02-29"],
    ["2025-02-29", "2025-01-01"],
    ["0000-01-01"],
    ["9999-12-31", "2025-01-01"],
    ["1677-09-21", "1677-09-22", "2262-04-11"],
    ["2025/01/01", "2025-1-01", " 2025-01-01", "x"],
]


@pytest.mark.parametrize("values", DATES)
def test_arrow_dates_parse_as_pandas(monkeypatch, values):
    s = pd.Series(values, dtype=object)
    fast = sc.parse_date(s)
    monkeypatch.setattr(sc, "_parse_iso_dates_arrow", lambda *a: None)
    pd.testing.assert_series_equal(fast, sc.parse_date(s))


@pytest.mark.parametrize(
    "ids",
    [["a", "a", "b"], ["a", "b", "c"], ["b", "a", "b"], ["a", np.nan, np.nan], ["A", "a", "a "]],
)
def test_neighbour_repeats_match_duplicated(ids):
    days = pd.to_datetime(["2025-01-01", "2025-01-01", "2025-01-02"])
    frame = pd.DataFrame({"id": pd.Series(ids, dtype=object), "day": days})
    for keys in (["id"], ["id", "day"]):
        found = sc._repeats_in_order(frame[keys])
        if found is not None:
            assert np.array_equal(found, frame[keys].duplicated(keep=False).to_numpy())
