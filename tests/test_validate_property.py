"""Property test: the validator survives any corruption of the demo cohort.

Hypothesis corrupts a slice of the demo cohort at random (columns dropped, repeated, shuffled or
renamed; cells replaced by random text, numbers, NaN, infinities or huge values; files
truncated, re-encoded, given another delimiter or random bytes) and runs the command line's
validation entry point (:func:`recurstudy.validate.main_validate`). It must never raise; it
always writes its report; and it never leaves a result that looks complete when it is not:
on failure no clean table exists and the report says failed; on success the clean tables meet
the contract's core rules (ids present, trimmed and unique, dates present and ordered, every
episode belongs to a participant and lies within follow-up).

Bounded: derandomized (the same examples every run), 30 examples on a 30-participant cohort,
about 10 s (400 random examples were run once without a failure).
"""

from __future__ import annotations

import codecs
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recurstudy.validate import main_validate

REPO = Path(__file__).resolve().parents[1]
TABLES = ("participants", "episodes", "pain_scores")
N_PARTICIPANTS = 30


def _demo() -> dict[str, pd.DataFrame]:
    read = {
        t: pd.read_csv(REPO / "data/demo" / f"{t}.csv", dtype=str, keep_default_na=False)
        for t in TABLES
    }
    ids = set(read["participants"]["participant_id"].head(N_PARTICIPANTS))
    return {t: df[df["participant_id"].isin(ids)].reset_index(drop=True) for t, df in read.items()}


DEMO = _demo()
# The demo's data contract settings (covariates, adjust_for, arms), without models or claims: the
# validator reads nothing else, and a short config keeps each example fast.
CONFIG = {
    k: v
    for k, v in yaml.safe_load((REPO / "config/config.yaml").read_text()).items()
    if k in ("arms", "covariates", "adjust_for", "on_invalid")
}

cell_values = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "",
            "NA",
            "null",
            "NaN",
            "inf",
            "-inf",
            "1e400",
            "-1",
            "0",
            "007",
            " P0001",
            "p0001",
            "2025-02-30",
            "31/12/2025",
            "45663",
            "2025-01-06T10:00:00+02:00",
            "control ",
            "intervention",
            "9" * 400,
            '"',
            "\n",
            ",",
            ";",
        ]
    ),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
)


@st.composite
def frame_corruption(draw, df: pd.DataFrame) -> pd.DataFrame:
    """One corruption of a table's columns or cells."""
    df = df.copy()
    kind = draw(st.sampled_from(["drop", "duplicate", "shuffle", "rename", "cells", "rows"]))
    cols = list(df.columns)
    if kind == "drop" and cols:
        df = df.drop(columns=draw(st.sampled_from(cols)))
    elif kind == "duplicate" and cols:
        col = draw(st.sampled_from(cols))
        df = pd.concat([df, df[[col]]], axis=1)
    elif kind == "shuffle":
        order = draw(st.permutations(cols))
        df = df[list(order)]
    elif kind == "rename" and cols:
        col = draw(st.sampled_from(cols))
        df = df.rename(columns={col: draw(st.text(max_size=12))})
    elif kind == "cells" and len(df) and cols:
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(df) - 1))
            j = draw(st.integers(0, len(cols) - 1))
            df.iat[i, j] = draw(cell_values)
    elif kind == "rows" and len(df):
        action = draw(st.sampled_from(["empty", "repeat", "half"]))
        if action == "empty":
            df = df.iloc[:0]
        elif action == "repeat":
            df = pd.concat([df, df.iloc[: draw(st.integers(1, len(df)))]], ignore_index=True)
        else:
            df = df.iloc[: len(df) // 2]
    return df


@st.composite
def byte_corruption(draw, data: bytes) -> bytes:
    """One corruption of a file's bytes."""
    kind = draw(
        st.sampled_from(["truncate", "encode", "delimiter", "insert", "bom", "crlf", "blank"])
    )
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data)))]
    if kind == "encode":
        enc = draw(st.sampled_from(["latin-1", "cp1252", "utf-16", "utf-16-le", "utf-32"]))
        return data.decode("utf-8", errors="replace").encode(enc, errors="replace")
    if kind == "delimiter":
        return data.replace(b",", draw(st.sampled_from([b";", b"\t", b"|", b" "])))
    if kind == "insert":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]
    if kind == "bom":
        return codecs.BOM_UTF8 + data
    if kind == "crlf":
        return data.replace(b"\n", b"\r\n")
    return b"\n" * draw(st.integers(0, 3))


@st.composite
def corrupted_cohort(draw) -> tuple[dict[str, bytes], dict]:
    frames = {t: df for t, df in DEMO.items()}
    for _ in range(draw(st.integers(1, 3))):
        t = draw(st.sampled_from(TABLES))
        frames[t] = draw(frame_corruption(frames[t]))
    files = {}
    for t, df in frames.items():
        buf = io.StringIO()
        df.to_csv(buf, index=False, lineterminator="\n")
        files[t] = buf.getvalue().encode("utf-8", errors="surrogatepass")
    if draw(st.booleans()):
        t = draw(st.sampled_from(TABLES))
        files[t] = draw(byte_corruption(files[t]))
    config = {**CONFIG, "on_invalid": draw(st.sampled_from(["fail", "exclude"]))}
    if draw(st.booleans()):
        files.pop("pain_scores")
    config["data"] = {t: f"cohort/{t}.csv" for t in files}
    return files, config


def _check_clean(clean: Path) -> None:
    """The clean tables of a passing run meet the contract's core rules."""
    p = pd.read_parquet(clean / "participants.parquet")
    e = pd.read_parquet(clean / "episodes.parquet")
    assert len(p) > 0
    ids = p["participant_id"]
    assert ids.notna().all() and ids.is_unique
    assert (ids == ids.str.strip()).all()
    assert ids.str.strip().str.casefold().is_unique
    assert p["enrolled_on"].notna().all() and p["followup_end"].notna().all()
    assert (p["followup_end"] >= p["enrolled_on"]).all()
    assert set(p["arm"]) <= {"control", "intervention"}
    if len(e):
        merged = e.merge(p, on="participant_id", how="left", validate="many_to_one")
        assert merged["enrolled_on"].notna().all()  # every episode has its participant
        assert (merged["onset_on"] <= merged["followup_end"]).all()
        assert not e.duplicated(["participant_id", "onset_on"]).any()


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(corrupted_cohort())
def test_validator_never_crashes_on_a_corrupted_cohort(cohort) -> None:
    files, config = cohort
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        (run / "cohort").mkdir()
        for t, data in files.items():
            (run / "cohort" / f"{t}.csv").write_bytes(data)
        (run / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        clean = run / "clean"
        clean.mkdir()
        for t in TABLES:  # an earlier run's tables must never survive a failed validation
            (clean / f"{t}.parquet").write_bytes(b"stale")
        code = main_validate(str(run / "config.yaml"), str(run / "out"), str(clean), str(run))
        assert code in (0, 1)
        report = json.loads((run / "out" / "report.json").read_text(encoding="utf-8"))
        md = (run / "out" / "report.md").read_text(encoding="utf-8")
        failures = pd.read_csv(run / "out" / "failure_cases.csv", dtype=str)
        assert report["ok"] is (code == 0)
        if code == 1:
            assert "**Result: failed.**" in md
            assert not any((clean / f"{t}.parquet").exists() for t in TABLES)
            assert len(failures) > 0
            # every failure names its table, its file when one was given, and its check
            assert failures["table"].isin(TABLES).all() and failures["check"].notna().all()
        else:
            assert "**Result: passed" in md
            _check_clean(clean)
            if "pain_scores" not in files:
                assert not (clean / "pain_scores.parquet").exists()


def test_the_uncorrupted_slice_passes(tmp_path: Path) -> None:
    """The property's starting point is a valid cohort (so failures come from corruption)."""
    (tmp_path / "cohort").mkdir()
    for t, df in DEMO.items():
        df.to_csv(tmp_path / "cohort" / f"{t}.csv", index=False)
    config = {**CONFIG, "data": {t: f"cohort/{t}.csv" for t in TABLES}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    code = main_validate(
        str(tmp_path / "config.yaml"),
        str(tmp_path / "out"),
        str(tmp_path / "clean"),
        str(tmp_path),
    )
    assert code == 0
    _check_clean(tmp_path / "clean")
    assert np.isfinite(len(pd.read_parquet(tmp_path / "clean" / "episodes.parquet")))
