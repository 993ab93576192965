"""Reading awkward inputs, exclude mode, config-driven labels and covariates, Parquet, reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recurstudy.io import TEXT, InputError, read_table
from recurstudy.validate import (
    main_validate,
    validate_cohort,
    write_clean_tables,
    write_validation_report,
)

FIXTURES = Path(__file__).parent / "data" / "validation"
TABLES = ("participants", "episodes", "pain_scores")
PARTICIPANTS_HEADER = "participant_id,arm,enrolled_on,followup_end"


def config(**overrides) -> dict:
    cfg = {
        "data": {t: f"data/{t}.csv" for t in TABLES},
        "arms": {"control": "control", "intervention": "intervention"},
        "covariates": {"age": "numeric", "sex": "categorical"},
        "adjust_for": ["age"],
        "on_invalid": "fail",
    }
    cfg.update(overrides)
    return cfg


def cohort(tmp_path: Path, **texts: str | bytes) -> Path:
    """The valid fixture cohort in tmp_path/data; keyword arguments replace a table's bytes."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for table in TABLES:
        shutil.copy(FIXTURES / f"{table}.csv", data / f"{table}.csv")
    for table, text in texts.items():
        raw = text.encode("utf-8") if isinstance(text, str) else text
        (data / f"{table}.csv").write_bytes(raw)
    return tmp_path


def rows_of(failures: pd.DataFrame) -> list[tuple]:
    return [
        (r.table, None if pd.isna(r.row) else int(r.row), r.column, r.check)
        for r in failures.itertuples()
    ]


# ---------------------------------------------------------------------------- unreadable input


def test_missing_file_is_a_failure_and_other_tables_are_still_checked(tmp_path):
    root = cohort(tmp_path, pain_scores="participant_id,assessed_on,nrs\nP01,2024-02-01,12\n")
    (root / "data" / "episodes.csv").unlink()
    outcome = validate_cohort(config(), root)
    assert not outcome.ok
    assert rows_of(outcome.failures) == [
        ("episodes", None, "", "readable"),
        ("pain_scores", 2, "nrs", "nrs in [0, 10]"),
    ]
    message = outcome.failures["value"].iloc[0]
    assert message.startswith("data/episodes.csv: file not found")
    assert str(tmp_path) not in message  # paths as given in the config


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"", "is empty (0 bytes)"),
        (b"\n\n", "only blank lines"),
        (f"{PARTICIPANTS_HEADER}\n".encode(), "has a header but no data rows"),
        (
            b"participant_id;arm;enrolled_on;followup_end\nP01;control;2024-01-10;2024-07-10\n",
            "looks ';'-delimited; recurstudy expects comma-separated CSV",
        ),
        (
            b"participant_id\tarm\tenrolled_on\tfollowup_end\nP01\tcontrol\t2024-01-10\t2024-07-10\n",
            "looks tab-delimited",
        ),
        (
            f"{PARTICIPANTS_HEADER}\nP01,control,2024-01-10,2024-07-10\nP02,contr\xf4le,2024-01-10,"
            "2024-07-10\n".encode("latin-1"),
            "is not valid UTF-8: byte 0xf4 at byte offset 87 (line 3",
        ),
        (
            f"{PARTICIPANTS_HEADER}\nP01,control,2024-01-10,2024-07-10,extra\n".encode(),
            "more fields than the header",
        ),
        (
            f'{PARTICIPANTS_HEADER}\nP01,control,2024-01-10,2024-07-10\nP02,"control,x\n'.encode(),
            "is not a well-formed CSV file",
        ),
        (b"participant_id,arm,arm,enrolled_on\nP01,a,b,c\n", "repeats column name(s) arm"),
    ],
)
def test_unreadable_participants(tmp_path, text, expected):
    root = cohort(tmp_path, participants=text)
    with pytest.raises(InputError, match=None) as err:
        read_table(root / "data" / "participants.csv", "participants")
    assert expected in str(err.value)
    assert "participants.csv" in str(err.value)
    outcome = validate_cohort(config(), root)
    assert not outcome.ok
    first = outcome.failures.iloc[0]
    assert (first["table"], first["column"], first["check"]) == ("participants", "", "readable")
    assert pd.isna(first["row"]) and expected in first["value"]
    # without participants the other tables are still read and checked on their own
    assert set(outcome.tables) == {"episodes", "pain_scores"}


def test_header_only_episodes_is_a_valid_empty_table(tmp_path):
    root = cohort(
        tmp_path,
        episodes="participant_id,onset_on,resolved_on,severity\n",
        pain_scores="participant_id,assessed_on,nrs",  # no final newline either
    )
    outcome = validate_cohort(config(), root)
    assert outcome.ok, outcome.failures
    assert len(outcome.tables["episodes"]) == 0
    assert outcome.tables["episodes"]["onset_on"].dtype == "datetime64[ns]"
    assert outcome.flow["episodes"] == {
        "received": 0,
        "excluded": 0,
        "analysed": 0,
        "excluded_unlinked": 0,
    }


def test_line_numbers_with_quoted_newlines_blank_lines_and_crlf(tmp_path):
    text = (
        f"{PARTICIPANTS_HEADER},site\r\n"
        'P01,control,2024-01-10,2024-07-10,"Oslo\r\nnorth"\r\n'  # lines 2-3
        "\r\n"  # line 4: blank, skipped
        'P02,intervention,2024-01-15,2024-07-15,"say ""hi"""\r\n'  # line 5
        'P03,control,2024-02-01,2024-08-01,"a\n\nb"\r\n'  # lines 6-8
        "P04,placebo,2024-02-03,2024-08-03,B\r\n"  # line 9
    )
    root = cohort(tmp_path, participants="\ufeff" + text)  # with a byte-order mark
    df = read_table(root / "data" / "participants.csv", "participants")
    assert df["_row"].tolist() == [2, 5, 6, 9]
    assert df["site"].tolist() == ["Oslo\r\nnorth", 'say "hi"', "a\n\nb", "B"]
    assert list(df.columns[:1]) == ["participant_id"]  # BOM stripped
    outcome = validate_cohort(config(covariates={}, adjust_for=[]), root)
    assert rows_of(outcome.failures) == [
        ("participants", 9, "arm", "arm in {control, intervention}"),
    ]


def test_line_numbers_fall_back_to_csv_module_for_odd_quoting(tmp_path):
    # a quote inside an unquoted field is literal for pandas, which breaks quote counting
    text = (
        f'{PARTICIPANTS_HEADER}\nP01,con"trol,2024-01-10,2024-07-10\nP02,x,2024-01-10,2024-07-10\n'
    )
    root = cohort(tmp_path, participants=text)
    df = read_table(root / "data" / "participants.csv", "participants")
    assert df["_row"].tolist() == [2, 3]
    assert df["arm"].tolist() == ['con"trol', "x"]


def test_read_table_keeps_text_and_marks_empty_as_missing(tmp_path):
    root = cohort(
        tmp_path, episodes="participant_id,onset_on,resolved_on,severity\nP01,2024-02-01,,NA\n"
    )
    df = read_table(root / "data" / "episodes.csv", "episodes")
    assert df["resolved_on"].isna().all()
    assert df["severity"].tolist() == ["NA"]  # only "" is missing; NA is reported as not a number
    # text as Arrow-backed strings (pandas 3's str), missing as NaN
    assert all(t == TEXT for t in df.drop(columns="_row").dtypes)
    assert df["resolved_on"].iloc[0] is np.nan


def test_unknown_extension(tmp_path):
    (tmp_path / "p.xlsx").write_bytes(b"xx")
    with pytest.raises(InputError, match="unknown file type '.xlsx'"):
        read_table(tmp_path / "p.xlsx", "participants")


# ------------------------------------------------------------------------------ exclude mode

BAD_EPISODE = (
    "participant_id,onset_on,resolved_on,severity\n"
    "P01,2024-02-01,2024-02-04,6\n"
    "P01,2024-03-15,,7\n"
    "P02,2024-04-01,2024-04-02,30\n"  # line 4: severity out of range -> P02 excluded
    "P04,2024-08-03,2024-08-05,8\n"
    "P77,2024-05-01,,\n"  # line 6: unknown participant
)


def test_exclude_mode_removes_participant_from_every_table(tmp_path):
    root = cohort(tmp_path, episodes=BAD_EPISODE)
    outcome = validate_cohort(config(on_invalid="exclude"), root)
    assert outcome.ok
    assert rows_of(outcome.failures) == [
        ("episodes", 4, "severity", "severity in [0, 10]"),
        ("episodes", 6, "participant_id", "participant_id in participants"),
    ]
    for table, df in outcome.tables.items():
        assert "P02" not in set(df["participant_id"]), table
        assert "P77" not in set(df["participant_id"]), table
    assert outcome.tables["participants"]["participant_id"].tolist() == ["P01", "P03", "P04"]
    assert len(outcome.tables["pain_scores"]) == 3  # P02's score went too
    assert outcome.excluded.to_dict("records") == [
        {
            "participant_id": "P02",
            "table": "episodes",
            "rows": "episodes:4",
            "reasons": "episodes.severity: severity in [0, 10]",
        },
        {
            "participant_id": "P77",
            "table": "episodes",
            "rows": "episodes:6",
            "reasons": "episodes.participant_id: participant_id in participants",
        },
    ]
    flow = outcome.flow
    p = flow["participants"]
    assert p["received"] == 4 and p["excluded"] == 1 and p["analysed"] == 3
    for arm in ("control", "intervention", "other"):
        assert p["received_by_arm"][arm] == p["excluded_by_arm"][arm] + p["analysed_by_arm"][arm]
    assert p["excluded_by_arm"] == {"control": 0, "intervention": 1, "other": 0}
    assert p["excluded_by_reason"] == {"episodes.severity: severity in [0, 10]": 1}
    assert flow["episodes"] == {"received": 5, "excluded": 2, "analysed": 3, "excluded_unlinked": 1}
    assert flow["pain_scores"]["received"] == 4 and flow["pain_scores"]["analysed"] == 3

    out = tmp_path / "report"
    write_validation_report(outcome, out)
    excluded = pd.read_csv(out / "excluded.csv", dtype=str)
    assert excluded["participant_id"].tolist() == ["P02", "P77"]
    assert "passed with exclusions" in (out / "report.md").read_text()


def test_exclude_mode_lists_all_failing_rows_and_tables_of_a_participant(tmp_path):
    root = cohort(
        tmp_path,
        participants=(
            "participant_id,arm,enrolled_on,followup_end,age\n"
            "P01,control,2024-01-10,2024-07-10,230\n"  # line 2
            "P02,intervention,2024-01-15,2024-07-15,40\n"
            "P03,control,2024-02-01,2024-08-01,40\n"
            "P04,intervention,2024-02-03,2024-08-03,40\n"
        ),
        episodes=BAD_EPISODE.replace("P01,2024-03-15,,7", "P01,2024-03-15,,-7"),
    )
    outcome = validate_cohort(config(on_invalid="exclude"), root)
    line = outcome.excluded.iloc[0].to_dict()
    assert line == {
        "participant_id": "P01",
        "table": "participants;episodes",
        "rows": "participants:2, episodes:3",
        "reasons": "participants.age: age in [16, 100]; episodes.severity: severity in [0, 10]",
    }
    # The fixture lacks a declared covariate column (a table-level failure), so the run stops:
    # P01 and P02 are counted as excluded and nothing as analysed.
    assert not outcome.ok and outcome.flow["stopped"]
    assert outcome.flow["participants"]["excluded"] == 2
    assert outcome.flow["participants"]["analysed"] == 0
    assert outcome.flow["participants"]["excluded_by_arm"]["control"] == 1


def test_exclude_mode_with_nobody_left_fails(tmp_path):
    root = cohort(tmp_path)
    outcome = validate_cohort(
        config(on_invalid="exclude", arms={"control": "a", "intervention": "b"}), root
    )
    assert not outcome.ok
    assert outcome.flow["participants"]["analysed"] == 0
    assert outcome.flow["participants"]["excluded_by_arm"]["other"] == 4


def test_exclude_mode_table_level_failure_is_fatal(tmp_path):
    root = cohort(tmp_path, episodes="participant_id,resolved_on\nP01,2024-02-03\n")
    outcome = validate_cohort(config(on_invalid="exclude"), root)
    assert not outcome.ok
    assert ("episodes", None, "onset_on", "column present") in rows_of(outcome.failures)


def test_fail_mode_keeps_every_row(tmp_path):
    root = cohort(tmp_path, episodes=BAD_EPISODE)
    outcome = validate_cohort(config(), root)
    assert not outcome.ok
    assert len(outcome.tables["episodes"]) == 5
    assert outcome.excluded.empty
    assert outcome.flow["participants"]["excluded"] == 0


# ------------------------------------------------------------------ config-driven checks


def test_custom_arm_labels(tmp_path):
    text = (
        f"{PARTICIPANTS_HEADER},age\n"
        "P01,placebo,2024-01-10,2024-07-10,30\n"
        "P02,drug,2024-01-15,2024-07-15,30\n"
        "P03,control,2024-02-01,2024-08-01,30\n"  # line 4: not a configured label
        "P04,drug,2024-02-03,2024-08-03,30\n"
    )
    root = cohort(tmp_path, participants=text)
    cfg = config(arms={"control": "placebo", "intervention": "drug"}, covariates={"age": "numeric"})
    outcome = validate_cohort(cfg, root)
    assert rows_of(outcome.failures) == [("participants", 4, "arm", "arm in {placebo, drug}")]
    flow = outcome.flow
    assert flow["arms"] == {"control": "placebo", "intervention": "drug"}
    assert flow["participants"]["received_by_arm"] == {"control": 1, "intervention": 2, "other": 1}


def test_declared_covariates_of_each_type(tmp_path):
    text = (
        f"{PARTICIPANTS_HEADER},age,smoker,bmi,visits,region\n"
        "P01,control,2024-01-10,2024-07-10,30,yes,22.5,3,north\n"
        "P02,intervention,2024-01-15,2024-07-15,30,FALSE,,2,\n"
        "P03,control,2024-02-01,2024-08-01,30,sometimes,24,2,south\n"  # line 4
        "P04,intervention,2024-02-03,2024-08-03,30,0,heavy,2.5,west\n"  # line 5
    )
    cfg = config(
        covariates={
            "age": "numeric",
            "smoker": "boolean",
            "bmi": "numeric",
            "visits": "integer",
            "region": "categorical",
        },
        adjust_for=["age", "smoker", "region"],
    )
    outcome = validate_cohort(cfg, cohort(tmp_path, participants=text))
    assert rows_of(outcome.failures) == [
        ("participants", 3, "region", "missing value (covariate in adjust_for)"),
        ("participants", 4, "smoker", "not a boolean (true/false, yes/no, 1/0)"),
        ("participants", 5, "bmi", "not a number"),
        ("participants", 5, "visits", "not an integer"),
    ]
    p = outcome.tables["participants"]
    assert str(p["smoker"].dtype) == "boolean" and p["smoker"].tolist()[:2] == [True, False]
    assert p["bmi"].dtype == "float64" and str(p["visits"].dtype) == "Int64"


def test_declared_covariate_must_be_present(tmp_path):
    outcome = validate_cohort(
        config(covariates={"age": "numeric", "smoker": "boolean"}), cohort(tmp_path)
    )
    assert rows_of(outcome.failures) == [("participants", None, "smoker", "column present")]


def test_extra_columns_are_kept(tmp_path):
    outcome = validate_cohort(config(), cohort(tmp_path))
    note = outcome.tables["participants"]["note"]
    assert note.iloc[0] == "first" and note.iloc[1:].isna().all()


# ------------------------------------------------------------------------------ Parquet


def _write_parquet_cohort(tmp_path: Path) -> dict:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    p = pd.read_csv(FIXTURES / "participants.csv", dtype=str, keep_default_na=False)
    p["enrolled_on"] = pd.to_datetime(p["enrolled_on"]).dt.date  # Parquet date32
    p["followup_end"] = pd.to_datetime(p["followup_end"])  # Parquet timestamp
    p["age"] = p["age"].astype(float)
    p.loc[2, "age"] = 12.0  # row 3
    p["prior_episodes"] = p["prior_episodes"].astype(int)
    pq.write_table(pa.Table.from_pandas(p, preserve_index=False), data / "participants.parquet")
    e = pd.read_csv(FIXTURES / "episodes.csv", dtype=str, keep_default_na=False)
    e["onset_on"] = pd.to_datetime(e["onset_on"]).dt.date
    e["resolved_on"] = pd.to_datetime(e["resolved_on"].replace("", None)).dt.date
    e["severity"] = e["severity"].astype(int)
    pq.write_table(pa.Table.from_pandas(e, preserve_index=False), data / "episodes.pq")
    cfg = config()
    cfg["data"] = {
        "participants": "data/participants.parquet",
        "episodes": "data/episodes.pq",
        "pain_scores": None,
    }
    return cfg


def test_parquet_input(tmp_path):
    cfg = _write_parquet_cohort(tmp_path)
    df = read_table(tmp_path / "data" / "participants.parquet", "participants")
    assert df["_row"].tolist() == [1, 2, 3, 4]
    outcome = validate_cohort(cfg, tmp_path)
    assert rows_of(outcome.failures) == [("participants", 3, "age", "age in [16, 100]")]
    assert outcome.failures["value"].tolist() == ["12.0"]
    assert outcome.failures["file"].tolist() == ["data/participants.parquet"]
    p = outcome.tables["participants"]
    assert (
        p["enrolled_on"].dtype == "datetime64[ns]" and p["followup_end"].dtype == "datetime64[ns]"
    )
    assert "pain_scores" not in outcome.tables
    e = outcome.tables["episodes"]
    assert e["resolved_on"].isna().sum() == 1


def test_unreadable_parquet(tmp_path):
    cfg = _write_parquet_cohort(tmp_path)
    (tmp_path / "data" / "episodes.pq").write_bytes(b"PAR1 this is not parquet")
    outcome = validate_cohort(cfg, tmp_path)
    readable = outcome.failures[outcome.failures["check"] == "readable"]
    assert readable["table"].tolist() == ["episodes"]
    assert "is not a readable Parquet file" in readable["value"].iloc[0]


# ------------------------------------------------------------------------------ outputs


def test_reports_are_deterministic_and_complete(tmp_path):
    root = cohort(tmp_path, episodes=BAD_EPISODE)
    outcome = validate_cohort(config(), root)
    write_validation_report(outcome, tmp_path / "a")
    write_validation_report(validate_cohort(config(), root), tmp_path / "b")
    for name in ("report.json", "report.md", "failure_cases.csv", "excluded.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert b"\r\n" not in (tmp_path / "a" / name).read_bytes()
        assert str(tmp_path).encode() not in (tmp_path / "a" / name).read_bytes()
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["ok"] is False and report["mode"] == "fail"
    assert report["n_failures"] == 2
    assert report["failures_by_table"] == {"episodes": 2}
    assert report["failures"][0] == {
        "table": "episodes",
        "file": "data/episodes.csv",
        "row": 4,
        "column": "severity",
        "check": "severity in [0, 10]",
        "value": "30",
    }
    assert report["flow"]["participants"]["received"] == 4
    cases = pd.read_csv(tmp_path / "a" / "failure_cases.csv", dtype=str, keep_default_na=False)
    assert list(cases.columns) == ["table", "file", "row", "column", "check", "value"]
    assert cases["row"].tolist() == ["4", "6"]
    assert (tmp_path / "a" / "excluded.csv").read_text() == "participant_id,table,rows,reasons\n"
    md = (tmp_path / "a" / "report.md").read_text()
    assert "| episodes | severity | severity in [0, 10] | 1 |" in md
    assert "- `data/episodes.csv:4`: `30`" in md


def test_clean_tables_sorted_and_typed(tmp_path):
    root = cohort(
        tmp_path,
        episodes=(
            "participant_id,onset_on,resolved_on,severity\n"
            "P04,2024-08-03,,8\nP01,2024-03-15,,7\nP01,2024-02-01,2024-02-04,6\n"
        ),
    )
    cfg = config()
    cfg["data"]["pain_scores"] = None
    outcome = validate_cohort(cfg, root)
    assert outcome.ok
    (tmp_path / "clean").mkdir()
    (tmp_path / "clean" / "pain_scores.parquet").write_bytes(b"stale")
    write_clean_tables(outcome, tmp_path / "clean")
    assert not (tmp_path / "clean" / "pain_scores.parquet").exists()
    e = pd.read_parquet(tmp_path / "clean" / "episodes.parquet")
    assert e["participant_id"].tolist() == ["P01", "P01", "P04"]
    assert e["onset_on"].dt.strftime("%Y-%m-%d").tolist() == [
        "2024-02-01",
        "2024-03-15",
        "2024-08-03",
    ]
    assert "_row" not in e.columns and list(e.index) == [0, 1, 2]
    first = (tmp_path / "clean" / "episodes.parquet").read_bytes()
    write_clean_tables(outcome, tmp_path / "clean")
    assert (tmp_path / "clean" / "episodes.parquet").read_bytes() == first


def _config_file(tmp_path: Path, **overrides) -> Path:
    import yaml

    cfg = config(**overrides)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_main_validate_ok(tmp_path, capsys):
    root = cohort(tmp_path)
    code = main_validate(
        str(_config_file(tmp_path)), str(tmp_path / "out"), str(tmp_path / "clean"), str(root)
    )
    assert code == 0
    assert (tmp_path / "clean" / "participants.parquet").exists()
    assert (tmp_path / "out" / "report.md").exists()
    # the cohort's extra column is the only thing said: a warning, not a failure
    assert capsys.readouterr().err == (
        "recurstudy: warning: data/participants.csv: 1 column(s) not in the data contract, "
        "kept as read but not checked: 'note'\n"
    )


def test_main_validate_failure_message(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = cohort(tmp_path, episodes=BAD_EPISODE)
    (tmp_path / "clean").mkdir()
    (tmp_path / "clean" / "episodes.parquet").write_bytes(b"from an earlier run")
    code = main_validate(str(_config_file(tmp_path)), "out", str(tmp_path / "clean"), str(root))
    assert code == 1
    err = capsys.readouterr().err
    assert err == (
        "recurstudy: validation failed: 2 problems in 1 table (episodes: 2); see out/report.md\n"
    )
    assert not (tmp_path / "clean" / "episodes.parquet").exists()


def test_main_validate_bad_config_no_traceback(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text("data: [unclosed\n")
    assert main_validate(str(path), str(tmp_path / "o"), str(tmp_path / "c")) == 1
    err = capsys.readouterr().err
    assert err.startswith("recurstudy: ") and "Traceback" not in err


def test_wrong_arm_labels_say_what_to_write(repo):
    """When no arm label matches the config, the message lists the labels found and shows the
    arms: line to write."""
    import yaml

    from recurstudy.config import validate_config
    from recurstudy.validate import outcome_message

    config = yaml.safe_load((repo / "config/config.yaml").read_text())
    config["arms"] = {"control": "usual care", "intervention": "NMR"}
    config["data"] = {k: str(repo / v) for k, v in config["data"].items()}
    validate_config(config)
    outcome = validate_cohort(config, repo)
    message = outcome_message(outcome, "results/validation")
    assert "the arm column holds 'control', 'intervention'" in message
    assert "arms: {control: control, intervention: intervention}" in message
    # one stray label among correct ones is an ordinary failure, with no arms: hint
    config["arms"] = {"control": "control", "intervention": "intervention"}
    assert "arms:" not in outcome_message(validate_cohort(config, repo), "x")
