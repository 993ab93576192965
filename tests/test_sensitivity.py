"""Sensitivity: forest rows and E-values from estimates, crude against adjusted, and IPTW
recovering a known rate ratio under confounding."""

import math

import numpy as np
import pandas as pd
import pytest

from recurstudy.models.base import TIDY_COLUMNS
from recurstudy.sensitivity import crude_vs_adjusted, forest, iptw

CONFIG = {
    "arms": {"control": "control", "intervention": "intervention"},
    "covariates": {"x": "numeric"},
    "adjust_for": ["x"],
    "design": "observational",
    "models": [
        {"name": "negbin_rate", "kind": "negbin"},
        {"name": "cox", "kind": "cox", "adjusted": False},
        {"name": "pwp", "kind": "pwp", "adjusted": False},
        {"name": "km", "kind": "kaplan_meier"},
    ],
}


def _row(model, term, est, se, converged=True):
    r = dict.fromkeys(TIDY_COLUMNS, np.nan)
    lo, hi = est - 1.96 * se, est + 1.96 * se
    r.update(
        model=model,
        term=term,
        estimate=est,
        std_error=se,
        conf_low=lo,
        conf_high=hi,
        exp_estimate=math.exp(est),
        exp_conf_low=math.exp(lo),
        exp_conf_high=math.exp(hi),
        converged=converged,
        message="",
    )
    return r


def test_forest_and_crude_vs_adjusted():
    est = pd.DataFrame(
        [
            _row("negbin_rate", "Intercept", -4.0, 0.1),
            _row("negbin_rate", "arm[T.intervention]", math.log(0.5), 0.1),
            _row("negbin_rate_adjusted", "arm[T.intervention]", math.log(0.6), 0.1),
            _row("cox", "arm[T.intervention]", float("nan"), float("nan"), converged=False),
        ]
    )
    f = forest(est, CONFIG)
    assert list(f["model"]) == ["negbin_rate", "negbin_rate_adjusted", "cox"]
    assert list(f["adjusted"]) == [False, True, False]
    assert list(f["group"]) == ["marginal rate", "marginal rate", "first-episode hazard"]
    assert f.loc[0, "e_value"] == pytest.approx(2 + math.sqrt(2))  # RR 0.5
    assert math.isnan(f.loc[2, "e_value"])
    cva = crude_vs_adjusted(f)
    assert len(cva) == 1 and cva.loc[0, "relative_change"] == pytest.approx(0.6 / 0.5 - 1)


def test_iptw_recovers_rate_ratio_under_confounding():
    rng = np.random.default_rng(4)
    n = 20000
    x = rng.normal(size=n)
    treated = rng.random(n) < 1 / (1 + np.exp(-1.2 * x))  # sicker people get treated more
    exposure = rng.integers(30, 183, n)
    mu = exposure * 0.01 * np.exp(math.log(0.5) * treated + 0.8 * x)
    counts = pd.DataFrame(
        {
            "participant_id": np.arange(n).astype(str),
            "arm": pd.Categorical(
                np.where(treated, "intervention", "control"), categories=["control", "intervention"]
            ),
            "x": x,
            "n_episodes": rng.poisson(mu),
            "exposure_days": exposure,
        }
    )
    crude = (
        counts.groupby("arm", observed=True)["n_episodes"].sum()
        / counts.groupby("arm", observed=True)["exposure_days"].sum()
    )
    assert crude.iloc[1] / crude.iloc[0] > 0.7  # confounding hides most of the effect
    result, balance = iptw(counts, CONFIG)
    r = result.iloc[0]
    assert abs(r["estimate"] - math.log(0.5)) < 4 * r["std_error"], r["exp_estimate"]
    assert r["std_error"] < 0.05
    b = balance.set_index("covariate").loc["x"]
    assert abs(b["smd_unweighted"]) > 0.4 and abs(b["smd_weighted"]) < 0.05


def test_e_values_by_estimand():
    """By hand: a first-episode hazard ratio of a common outcome is converted before the E-value
    (VanderWeele 2017); a conditional ratio gets none; randomised designs get a note."""
    from recurstudy.sensitivity import e_value_row, hr_to_rr_common

    hr, lo, hi = 0.35, 0.25, 0.49
    rr = (1 - 0.5 ** math.sqrt(hr)) / (1 - 0.5 ** math.sqrt(1 / hr))
    assert hr_to_rr_common(hr) == pytest.approx(rr, rel=1e-14)
    common = e_value_row("first-episode hazard", hr, lo, hi, 0.8, "observational")
    r = 1 / rr
    assert common["e_value"] == pytest.approx(r + math.sqrt(r * (r - 1)), rel=1e-12)
    r_hi = 1 / hr_to_rr_common(hi)  # the limit nearest 1
    assert common["e_value_ci"] == pytest.approx(r_hi + math.sqrt(r_hi * (r_hi - 1)), rel=1e-12)
    assert "common outcome" in common["e_value_scale"] and common["note"] == ""
    rare = e_value_row("first-episode hazard", hr, lo, hi, 0.05, "observational")
    assert rare["e_value"] == pytest.approx(1 / hr + math.sqrt(1 / hr * (1 / hr - 1)))
    assert rare["e_value"] > common["e_value"]  # treating a common HR as an RR overstates it
    cond = e_value_row("conditional", hr, lo, hi, 0.8, "observational")
    assert math.isnan(cond["e_value"]) and "no E-value" in cond["note"]
    rand = e_value_row("marginal rate", 0.5, 0.3, 0.8, None, "randomized")
    assert rand["e_value"] == pytest.approx(2 + math.sqrt(2))
    assert "not needed for a randomised comparison" in rand["note"]


def test_forest_leaves_out_non_ratio_models_and_marks_conditional():
    est = pd.DataFrame(
        [
            _row("pwp", "arm[T.intervention]", math.log(0.7), 0.1),
            _row("km", "logrank", float("nan"), float("nan")),
            _row("cox", "arm[T.intervention]", math.log(0.35), 0.1),
        ]
    )
    f = forest(est, {**CONFIG, "design": "randomized"}, control_risk=0.9).set_index("model")
    assert list(f.index) == ["pwp", "cox"]
    assert math.isnan(f.loc["pwp", "e_value"]) and "conditional" in f.loc["pwp", "e_value_note"]
    assert f.loc["cox", "e_value"] < 1 / 0.35 + math.sqrt(1 / 0.35 * (1 / 0.35 - 1))
