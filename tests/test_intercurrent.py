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


# --------------------------------------------------------------------- estimand strategies


def test_default_strategies_by_estimand_group():
    from recurstudy.models import described_models

    cfg = validate_config(_config())
    described = described_models(cfg)
    ag = dict(described["andersen_gill"].strategies)
    assert ag["terminal event"].startswith("while alive (conditional rate)")
    assert ag["informative dropout"].startswith("hypothetical")
    assert dict(described["cox_first_episode"].strategies)["terminal event"].startswith(
        "while alive: a death before the first episode"
    )
    assert dict(described["pain_mixed"].strategies)["informative dropout"].startswith(
        "hypothetical: as if participants who dropped out had gone on being assessed"
    )
    for name, desc in described.items():  # every model states both
        assert [e for e, _ in desc.strategies] == ["terminal event", "informative dropout"], name


def test_strategy_text_names_the_config_s_reasons():
    from recurstudy.claims import strategy_text

    strategies = (("terminal event", "while alive: X"), ("informative dropout", "hypothetical: Y"))
    assert strategy_text(strategies, ["death"], ["withdrawn", "lost_to_followup"]) == (
        "death (terminal event): while alive: X; withdrawn, lost_to_followup (informative "
        "dropout): hypothetical: Y"
    )
    assert strategy_text(strategies, [], ["withdrawn"]) == (
        "withdrawn (informative dropout): hypothetical: Y"
    )


def test_claims_carry_the_strategy_and_the_report_prints_it(tmp_path):
    from recurstudy.claims import evaluate_claims
    from recurstudy.report.text import intercurrent_sentence
    from recurstudy.settings import load_settings, stage_settings

    cfg = validate_config(
        _config(
            models=[{"name": "gl", "kind": "ghosh_lin"}, {"name": "ag", "kind": "andersen_gill"}],
            claims=[
                {
                    "id": "a",
                    "statement": "s",
                    "metric": "rate_reduction",
                    "claimed": 0.5,
                    "model": "gl",
                },
                {
                    "id": "b",
                    "statement": "s",
                    "metric": "hazard_reduction",
                    "claimed": 0.5,
                    "model": "ag",
                },
            ],
            informative_dropout=["withdrawn", "lost_to_followup"],
        )
    )
    settings = load_settings(stage_settings(cfg, "claims"), "claims")
    est = pd.DataFrame(
        {
            "model": ["gl", "ag"],
            "term": "arm[T.intervention]",
            "estimate": -0.7,
            "std_error": 0.1,
            "p_value": 1e-9,
            "robust": True,
            "converged": True,
            "message": "",
        }
    )
    table = evaluate_claims(settings, est, tmp_path).set_index("claim_id")
    gl, ag = table.loc["a", "intercurrent_strategy"], table.loc["b", "intercurrent_strategy"]
    assert gl.startswith("death (terminal event): while alive: episodes are counted up to death")
    assert "withdrawn, lost_to_followup (informative dropout): hypothetical" in gl
    assert ag.startswith("death (terminal event): while alive (conditional rate)")
    sentence = intercurrent_sentence(table.loc["a"].to_dict())
    assert sentence.startswith("Intercurrent events (ICH E9(R1) strategy): death \\(terminal")
    assert intercurrent_sentence({"intercurrent_strategy": float("nan")}) == ""
    assert "&lt;b&gt;" in intercurrent_sentence({"intercurrent_strategy": "<b>x</b>"})
