"""The verdict rule on public data (R's survival::cgd in the contract): a 68% claim that the
old rule called "supported" on 64% (34% to 81%) is "consistent but imprecise" under the
precision rule; a modest claim is "larger than claimed"; and the sensitivity models' agreement."""

import pandas as pd
import pytest
from test_public_cohorts import Study

from recurstudy.claims import evaluate_claims, sensitivity_agreement


@pytest.fixture(scope="module")
def cgd():
    s = Study("cgd")
    return s, pd.concat([r.table for r in s.results.values()], ignore_index=True)


def _claims(study, estimates, **claim):
    config = dict(study.config)
    config["claims"] = [{"id": "c", "statement": "s", "metric": "rate_reduction", **claim}]
    return config, evaluate_claims(config, estimates, "/nonexistent").iloc[0]


def test_cgd_68_percent_is_consistent_but_imprecise(cgd):
    study, est = cgd
    _, row = _claims(study, est, claimed=0.68, model="negbin_rate")
    assert row["estimate"] == pytest.approx(0.643, abs=0.001)
    assert (row["conf_low"], row["conf_high"]) == pytest.approx((0.341, 0.807), abs=0.001)
    assert row["claimed_in_ci"] and row["p_value_tost"] > 0.05
    assert row["verdict"] == "consistent but imprecise"


def test_cgd_modest_claim_is_larger_than_claimed(cgd):
    study, est = cgd
    _, row = _claims(study, est, claimed=0.2, model="negbin_rate")
    assert row["conf_low"] > 0.2 and row["verdict"] == "larger than claimed"


def test_cgd_sensitivity_models_agree(cgd):
    study, est = cgd
    config, _ = _claims(study, est, claimed=0.68, model="negbin_rate")
    table = evaluate_claims(config, est, "/nonexistent")
    agree = sensitivity_agreement(config, est, table).set_index("model")
    assert "negbin_rate" not in agree.index  # the claim's own model is not its sensitivity
    assert {"andersen_gill", "poisson_rate", "cox_first_episode"} <= set(agree.index)
    ag = agree.loc["andersen_gill"]
    assert ag["same_direction"] and ag["claim_in_ci"] and ag["agrees"]
    assert ag["verdict"] == "consistent but imprecise"
