"""Intercurrent events in the contract and the config: the `death` end reason, a study's own
end-reason labels, `terminal_events` and `informative_dropout`, and the estimand strategy each
model states for them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recurstudy.config import ConfigError, validate_config
from recurstudy.contract import END_REASONS
from recurstudy.schemas import map_end_reasons
from recurstudy.validate import validate_cohort

FIXTURES = Path(__file__).parent / "data" / "validation"


def _config(**extra) -> dict:
    return {"data": {"participants": "p.csv", "episodes": "e.csv"}, **extra}


def test_defaults_and_schema_enum_follow_the_contract():
    from recurstudy.config import schema

    cfg = validate_config(_config())
    assert cfg["terminal_events"] == ["death"]
    assert cfg["informative_dropout"] == ["withdrawn"]
    assert cfg["end_reason_labels"] == {}
    enum = schema()["properties"]["end_reason_labels"]["additionalProperties"]["enum"]
    assert tuple(enum) == END_REASONS and "death" in END_REASONS


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"terminal_events": ["died"]}, "terminal_events: 'died' is not an end_reason"),
        ({"informative_dropout": ["quit"]}, "informative_dropout: 'quit' is not an end_reason"),
        (
            {"terminal_events": ["death", "withdrawn"]},
            "informative_dropout: withdrawn is also under terminal_events",
        ),
        ({"end_reason_labels": {"died": "dead"}}, "end_reason_labels.died"),
        ({"terminal_events": "death"}, "terminal_events"),
    ],
)
def test_bad_intercurrent_config_names_the_key(extra, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(_config(**extra))


def test_map_end_reasons():
    raw = pd.Series(["died", "completed", "lost", np.nan, "moved away"], dtype=object)
    config = {"end_reason_labels": {"died": "death", "lost": "lost_to_followup"}}
    out = map_end_reasons(raw, config)
    assert out.tolist()[:3] == ["death", "completed", "lost_to_followup"]
    assert pd.isna(out.iloc[3]) and out.iloc[4] == "moved away"  # unmapped: left to the check
    assert map_end_reasons(raw, {}) is raw


def test_validation_maps_labels_and_reports_unmapped_ones(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for table in ("participants", "episodes"):
        shutil.copy(FIXTURES / f"{table}.csv", data / f"{table}.csv")
    text = (data / "participants.csv").read_text()
    text = text.replace(
        "P01,control,2024-01-10,2024-07-10,A,completed", "P01,control,2024-01-10,2024-07-10,A,Died"
    )
    text = text.replace(",withdrawn,", ",moved away,", 1)
    (data / "participants.csv").write_text(text)
    cfg = {
        "data": {"participants": "data/participants.csv", "episodes": "data/episodes.csv"},
        "arms": {"control": "control", "intervention": "intervention"},
        "covariates": {"age": "numeric", "sex": "categorical"},
        "on_invalid": "fail",
        "end_reason_labels": {"Died": "death"},
    }
    out = validate_cohort(cfg, tmp_path)
    bad = out.failures[out.failures["column"] == "end_reason"]
    assert bad[["file", "row", "value"]].values.tolist() == [
        ["data/participants.csv", 3, "moved away"]
    ]
    cfg["end_reason_labels"]["moved away"] = "withdrawn"
    out = validate_cohort(cfg, tmp_path)
    assert out.ok, out.failures
    p = out.tables["participants"].set_index("participant_id")["end_reason"]
    assert p["P01"] == "death" and p["P02"] == "withdrawn"
