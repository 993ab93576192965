"""Every rule of the data contract: a row that breaks it is reported with its table, CSV line,
column and check; the valid case passes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recurstudy.schemas import (
    column_specs,
    failure_frame,
    input_schema,
    parse_boolean,
    parse_date,
    parse_integer,
    parse_number,
)
from recurstudy.validate import validate_cohort

FIXTURES = Path(__file__).parent / "data" / "validation"
TABLES = ("participants", "episodes", "pain_scores")


def base_config(**overrides) -> dict:
    config = {
        "data": {t: f"data/{t}.csv" for t in TABLES},
        "arms": {"control": "control", "intervention": "intervention"},
        "covariates": {
            "age": "numeric",
            "prior_episodes": "numeric",
            "baseline_pain": "numeric",
            "sex": "categorical",
        },
        "adjust_for": ["age", "prior_episodes", "baseline_pain"],
        "on_invalid": "fail",
    }
    config.update(overrides)
    return config


def cohort(tmp_path: Path, edits=()) -> Path:
    """The valid fixture cohort in tmp_path/data, with `edits` (table, data row, column, value)
    applied (data row 0 is CSV line 2)."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for table in TABLES:
        shutil.copy(FIXTURES / f"{table}.csv", data / f"{table}.csv")
    frames = {}
    for table, row, column, value in edits:
        if table not in frames:
            frames[table] = pd.read_csv(data / f"{table}.csv", dtype=str, keep_default_na=False)
        frames[table].loc[row, column] = value
    for table, df in frames.items():
        df.to_csv(data / f"{table}.csv", index=False, lineterminator="\n")
    return tmp_path


def failures_of(tmp_path: Path, edits=(), **config) -> pd.DataFrame:
    outcome = validate_cohort(base_config(**config), cohort(tmp_path, edits))
    return outcome.failures


def found(failures: pd.DataFrame) -> set[tuple]:
    return {
        (r.table, None if pd.isna(r.row) else int(r.row), r.column, r.check)
        for r in failures.itertuples()
    }


def test_fixture_cohort_is_valid(tmp_path):
    outcome = validate_cohort(base_config(), cohort(tmp_path))
    assert outcome.ok
    assert outcome.failures.empty
    assert list(outcome.failures.columns) == ["table", "file", "row", "column", "check", "value"]
    assert {t: len(df) for t, df in outcome.tables.items()} == {
        "participants": 4,
        "episodes": 4,
        "pain_scores": 4,
    }


UNDER_WAY = "onset_on > enrolled_on or resolved_on > enrolled_on"
# (table, data row, column, bad value, expected check); the line reported is data row + 2.
BROKEN = [
    ("participants", 1, "arm", "placebo", "arm in {control, intervention}"),
    ("participants", 2, "arm", "", "missing value"),
    ("participants", 1, "enrolled_on", "2024/01/15", "not a date (YYYY-MM-DD)"),
    ("participants", 1, "enrolled_on", "2024-1-15", "not a date (YYYY-MM-DD)"),
    ("participants", 1, "enrolled_on", "2024-02-30", "not a date (YYYY-MM-DD)"),
    ("participants", 1, "enrolled_on", "", "missing value"),
    ("participants", 3, "followup_end", "", "missing value"),
    ("participants", 3, "followup_end", "3 Aug 2024", "not a date (YYYY-MM-DD)"),
    (
        "participants",
        0,
        "end_reason",
        "died",
        "end_reason in {completed, withdrawn, lost_to_followup, death}",
    ),
    ("participants", 0, "age", "15", "age in [16, 100]"),
    ("participants", 0, "age", "101", "age in [16, 100]"),
    ("participants", 0, "age", "thirty", "not a number"),
    ("participants", 0, "age", "", "missing value (covariate in adjust_for)"),
    ("participants", 2, "baseline_pain", "11", "baseline_pain in [0, 10]"),
    ("participants", 2, "baseline_pain", "-1", "baseline_pain in [0, 10]"),
    ("participants", 2, "prior_episodes", "-1", "prior_episodes >= 0"),
    ("participants", 2, "prior_episodes", "1.5", "not an integer"),
    ("participants", 2, "prior_episodes", "", "missing value (covariate in adjust_for)"),
    ("episodes", 2, "participant_id", "P99", "participant_id in participants"),
    ("episodes", 2, "participant_id", "", "missing value"),
    ("episodes", 0, "onset_on", "", "missing value"),
    ("episodes", 0, "onset_on", "01/02/2024", "not a date (YYYY-MM-DD)"),
    # P01's second episode is unresolved: begun by enrolment, it would never be at risk
    ("episodes", 1, "onset_on", "2024-01-10", UNDER_WAY),
    ("episodes", 1, "onset_on", "2024-01-01", UNDER_WAY),
    ("episodes", 3, "onset_on", "2024-08-04", "onset_on <= followup_end"),
    ("episodes", 2, "resolved_on", "2024-03-31", "resolved_on >= onset_on"),
    ("episodes", 2, "resolved_on", "soon", "not a date (YYYY-MM-DD)"),
    ("episodes", 1, "severity", "11", "severity in [0, 10]"),
    ("episodes", 1, "severity", "high", "not a number"),
    ("pain_scores", 1, "participant_id", "P99", "participant_id in participants"),
    ("pain_scores", 1, "participant_id", "", "missing value"),
    ("pain_scores", 0, "assessed_on", "2024-01-09", "assessed_on >= enrolled_on"),
    ("pain_scores", 3, "assessed_on", "2024-08-02", "assessed_on <= followup_end"),
    ("pain_scores", 3, "assessed_on", "", "missing value"),
    ("pain_scores", 3, "assessed_on", "2024-8-1", "not a date (YYYY-MM-DD)"),
    ("pain_scores", 2, "nrs", "11", "nrs in [0, 10]"),
    ("pain_scores", 2, "nrs", "-0.5", "nrs in [0, 10]"),
    ("pain_scores", 2, "nrs", "", "missing value"),
    ("pain_scores", 2, "nrs", "moderate", "not a number"),
]


@pytest.mark.parametrize(("table", "row", "column", "value", "check"), BROKEN)
def test_broken_rule_is_reported(tmp_path, table, row, column, value, check):
    failures = failures_of(tmp_path, [(table, row, column, value)])
    assert found(failures) == {(table, row + 2, column, check)}
    assert failures["value"].tolist() == [value]
    assert failures["file"].tolist() == [f"data/{table}.csv"]


# Edits that stay within the contract (boundaries included).
VALID = [
    ("participants", 0, "age", "16"),
    ("participants", 0, "age", "100"),
    ("participants", 0, "age", "34.5"),
    ("participants", 1, "baseline_pain", "0"),
    ("participants", 1, "baseline_pain", "10"),
    ("participants", 1, "prior_episodes", "0"),
    ("participants", 1, "prior_episodes", "4.0"),
    ("participants", 1, "followup_end", "2024-01-15"),  # == enrolled_on; its episode moves
    ("participants", 0, "end_reason", ""),  # optional columns may be empty
    ("participants", 0, "site", ""),
    ("participants", 0, "sex", ""),
    ("participants", 0, "note", "anything, ignored"),
    ("episodes", 0, "resolved_on", "2024-02-01"),  # resolves the day it starts
    ("episodes", 0, "resolved_on", ""),  # unresolved
    ("episodes", 0, "resolved_on", "2025-01-01"),  # after follow-up
    ("episodes", 0, "severity", "0"),
    ("episodes", 0, "severity", ""),
    ("episodes", 0, "onset_on", "2024-01-11"),  # the day after enrolment
    ("episodes", 0, "onset_on", "2024-01-10"),  # under way at enrolment (resolved 2024-02-04)
    ("episodes", 0, "onset_on", "2023-12-01"),  # under way at enrolment, began long before
    ("episodes", 3, "onset_on", "2024-08-03"),  # on the last day of follow-up
    ("pain_scores", 0, "assessed_on", "2024-01-10"),  # on the day of enrolment
    ("pain_scores", 3, "assessed_on", "2024-08-01"),  # on the last day of follow-up
    ("pain_scores", 0, "nrs", "0"),
    ("pain_scores", 0, "nrs", "10"),
]


@pytest.mark.parametrize(("table", "row", "column", "value"), VALID)
def test_valid_value_passes(tmp_path, table, row, column, value):
    edits = [(table, row, column, value)]
    if (table, column) == ("participants", "followup_end"):
        # P02 is followed for 0 days: its episode goes to P01; its score on that day stays
        edits.append(("episodes", 2, "participant_id", "P01"))
    failures = failures_of(tmp_path, edits)
    assert failures.empty, failures.to_string()


def test_missing_participant_id_orphans_its_rows(tmp_path):
    failures = failures_of(tmp_path, [("participants", 1, "participant_id", "")])
    assert found(failures) == {
        ("participants", 3, "participant_id", "missing value"),
        ("episodes", 4, "participant_id", "participant_id in participants"),
        ("pain_scores", 4, "participant_id", "participant_id in participants"),
    }


def test_duplicate_participant_id_reports_every_copy(tmp_path):
    failures = failures_of(tmp_path, [("participants", 2, "participant_id", "P01")])
    assert found(failures) == {
        ("participants", 2, "participant_id", "participant_id unique"),
        ("participants", 4, "participant_id", "participant_id unique"),
        ("pain_scores", 5, "participant_id", "participant_id in participants"),  # P03's score
    }


def test_followup_end_before_enrolment(tmp_path):
    failures = failures_of(tmp_path, [("participants", 3, "followup_end", "2024-02-02")])
    assert found(failures) == {
        ("participants", 5, "followup_end", "followup_end >= enrolled_on"),
        ("episodes", 5, "onset_on", "onset_on <= followup_end"),  # P04's episode on 2024-08-03
    }


@pytest.mark.parametrize(
    ("onset", "resolved"),
    [
        ("2024-01-01", "2024-01-05"),  # began and ended before enrolment (2024-01-10)
        ("2024-01-01", "2024-01-10"),  # ended on the day of enrolment
        ("2024-01-10", "2024-01-10"),  # began and ended on the day of enrolment
    ],
)
def test_episode_over_by_enrolment_fails(tmp_path, onset, resolved):
    edits = [("episodes", 0, "onset_on", onset), ("episodes", 0, "resolved_on", resolved)]
    failures = failures_of(tmp_path, edits)
    assert found(failures) == {("episodes", 2, "onset_on", UNDER_WAY)}
    assert failures["value"].tolist() == [onset]


def test_episode_begun_by_enrolment_needs_a_resolution_column(tmp_path):
    root = cohort(tmp_path, [("episodes", 0, "onset_on", "2024-01-10")])
    path = root / "data" / "episodes.csv"
    pd.read_csv(path, dtype=str, keep_default_na=False).drop(columns="resolved_on").to_csv(
        path, index=False
    )
    failures = validate_cohort(base_config(), root).failures
    assert found(failures) == {("episodes", 2, "onset_on", UNDER_WAY)}


def test_unparsable_resolution_is_reported_once(tmp_path):
    # an episode begun before enrolment whose resolution is not a date: one failure, the date's
    edits = [("episodes", 0, "onset_on", "2024-01-02"), ("episodes", 0, "resolved_on", "soon")]
    assert found(failures_of(tmp_path, edits)) == {
        ("episodes", 2, "resolved_on", "not a date (YYYY-MM-DD)"),
    }


def test_duplicate_episode_onset(tmp_path):
    failures = failures_of(tmp_path, [("episodes", 1, "onset_on", "2024-02-01")])
    assert found(failures) == {
        ("episodes", 2, "onset_on", "(participant_id, onset_on) unique"),
        ("episodes", 3, "onset_on", "(participant_id, onset_on) unique"),
    }


def test_duplicate_pain_assessment(tmp_path):
    failures = failures_of(tmp_path, [("pain_scores", 1, "assessed_on", "2024-01-10")])
    assert found(failures) == {
        ("pain_scores", 2, "assessed_on", "(participant_id, assessed_on) unique"),
        ("pain_scores", 3, "assessed_on", "(participant_id, assessed_on) unique"),
    }


def test_same_onset_for_different_participants_is_fine(tmp_path):
    failures = failures_of(tmp_path, [("episodes", 2, "onset_on", "2024-02-01")])
    assert failures.empty


@pytest.mark.parametrize(
    ("table", "column"),
    [
        ("participants", "participant_id"),
        ("participants", "arm"),
        ("participants", "enrolled_on"),
        ("participants", "followup_end"),
        ("participants", "age"),  # a declared covariate
        ("episodes", "participant_id"),
        ("episodes", "onset_on"),
        ("pain_scores", "assessed_on"),
        ("pain_scores", "nrs"),
    ],
)
def test_missing_required_column(tmp_path, table, column):
    root = cohort(tmp_path)
    path = root / "data" / f"{table}.csv"
    pd.read_csv(path, dtype=str, keep_default_na=False).drop(columns=column).to_csv(
        path, index=False
    )
    failures = validate_cohort(base_config(), root).failures
    assert (table, None, column, "column present") in found(failures)
    present = failures[failures["check"] == "column present"]
    assert len(present) == 1 and present["row"].isna().all()
    if (table, column) == ("participants", "participant_id"):  # no flood of unknown ids
        assert len(failures) == 1


@pytest.mark.parametrize(
    ("table", "column"),
    [
        ("participants", "site"),
        ("participants", "end_reason"),
        ("episodes", "resolved_on"),
        ("episodes", "severity"),
    ],
)
def test_optional_column_may_be_absent(tmp_path, table, column):
    root = cohort(tmp_path)
    path = root / "data" / f"{table}.csv"
    pd.read_csv(path, dtype=str, keep_default_na=False).drop(columns=column).to_csv(
        path, index=False
    )
    outcome = validate_cohort(base_config(), root)
    assert outcome.ok, outcome.failures.to_string()
    if column == "resolved_on":  # absent = every episode unresolved
        assert outcome.tables["episodes"]["resolved_on"].isna().all()


def test_undeclared_contract_columns_are_optional(tmp_path):
    root = cohort(tmp_path)
    path = root / "data" / "participants.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.drop(columns=["age", "sex", "baseline_pain", "prior_episodes"]).to_csv(path, index=False)
    outcome = validate_cohort(base_config(covariates={}, adjust_for=[]), root)
    assert outcome.ok, outcome.failures.to_string()


def test_missing_value_allowed_in_covariate_not_adjusted_for(tmp_path):
    failures = failures_of(tmp_path, [("participants", 0, "age", "")], adjust_for=[])
    assert failures.empty


def test_several_failures_sorted_by_table_row_column(tmp_path):
    edits = [
        ("pain_scores", 0, "nrs", "12"),
        ("episodes", 1, "severity", "12"),
        ("participants", 3, "age", "12"),
        ("participants", 0, "baseline_pain", "12"),
        ("participants", 0, "age", "12"),
    ]
    failures = failures_of(tmp_path, edits)
    assert list(zip(failures["table"], failures["row"], failures["column"], strict=True)) == [
        ("participants", 2, "age"),
        ("participants", 2, "baseline_pain"),
        ("participants", 5, "age"),
        ("episodes", 3, "severity"),
        ("pain_scores", 2, "nrs"),
    ]


def test_unparsable_value_not_reported_twice(tmp_path):
    # followup_end >= enrolled_on cannot be judged when enrolled_on is not a date
    failures = failures_of(tmp_path, [("participants", 0, "enrolled_on", "2025-13-01")])
    assert found(failures) == {("participants", 2, "enrolled_on", "not a date (YYYY-MM-DD)")}


# ------------------------------------------------------------------ schema functions directly


def test_parsers():
    s = pd.Series(["2024-01-31", "2024-02-30", "2024-1-5", " 2024-01-05", "", np.nan], dtype=object)
    parsed = parse_date(s.replace("", np.nan))
    assert parsed.dtype == "datetime64[ns]"
    assert parsed.notna().tolist() == [True, False, False, False, False, False]
    num = parse_number(pd.Series(["1", "2.5", "1e2", "inf", "x", np.nan], dtype=object))
    assert num.tolist()[:3] == [1.0, 2.5, 100.0] and num.iloc[3:].isna().all()
    whole = parse_integer(pd.Series(["3", "3.0", "3.5", "x"], dtype=object))
    assert whole.dtype == "Int64" and whole.isna().tolist() == [False, False, True, True]
    flags = parse_boolean(pd.Series(["TRUE", "no", "1", "maybe", np.nan], dtype=object))
    assert flags.tolist()[:3] == [True, False, True] and flags.iloc[3:].isna().all()


def test_parse_date_accepts_typed_dates():
    ts = pd.Series(pd.to_datetime(["2024-01-05 13:45", None]))
    assert parse_date(ts).tolist()[0] == pd.Timestamp("2024-01-05")
    tz = ts.dt.tz_localize("Europe/Oslo")
    assert parse_date(tz).dtype == "datetime64[ns]"


def test_input_schema_on_a_frame():
    raw = pd.DataFrame(
        {"participant_id": ["a", np.nan], "onset_on": ["2024-01-01", "later"]}, dtype=object
    )
    out = failure_frame(input_schema("episodes", base_config()), raw)
    assert set(zip(out["index"], out["column"], out["check"], strict=True)) == {
        (1, "participant_id", "missing value"),
        (1, "onset_on", "not a date (YYYY-MM-DD)"),
    }


def test_column_specs_follow_config():
    specs = column_specs(
        "participants",
        {
            "covariates": {"smoker": "boolean", "prior_episodes": "numeric"},
            "adjust_for": ["smoker"],
        },
    )
    assert specs["smoker"].kind == "boolean" and specs["smoker"].required
    assert specs["smoker"].not_missing
    assert specs["prior_episodes"].kind == "integer"  # the contract's stricter type wins
    assert not specs["site"].required


def test_rules_come_from_the_contract_declarations(tmp_path, monkeypatch):
    """The checks are the contract's declarations: a rule added to contract.ROW_RULES is
    checked and reported, with no other change."""
    from recurstudy import contract
    from recurstudy.schemas import rules_schema

    for table, rules in contract.ROW_RULES.items():
        typed = pd.DataFrame(columns=list(contract.column_specs(table, base_config())))
        schema = rules_schema(table, base_config(), typed)
        declared = sorted(rule.column for rule in rules)
        built = sorted(c for c, col in schema.columns.items() for _ in col.checks)
        assert built == declared, table
    monkeypatch.setitem(
        contract.ROW_RULES,
        "pain_scores",
        (*contract.ROW_RULES["pain_scores"], contract.Range("nrs", 1, 9)),
    )
    failures = failures_of(tmp_path, [("pain_scores", 2, "nrs", "10")])
    assert found(failures) == {("pain_scores", 4, "nrs", "nrs in [1, 9]")}
