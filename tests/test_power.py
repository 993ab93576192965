"""Power by simulation: the minimum detectable reduction from a grid of simulated effects
against the closed form, its delta-method Monte Carlo error, a grid that does not reach 80%,
pain claims simulated from a fitted pain model, informative dropout, and determinism."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from recurstudy.models import fit_spec, model_specs
from recurstudy.power import (
    _probit_fit,
    closed_form_poisson_mde,
    grid_seed,
    mde_from_grid,
    pain_design_from_fit,
    pain_means_under_claim,
    pain_power_inputs,
    simulate_pain_from_inputs,
    simulate_replicates,
    summarize_pain_power,
    summarize_power,
)
from recurstudy.simulate import SimulationParams, simulate_cohort

ARMS = {"control": "control", "intervention": "intervention"}
POISSON_CONFIG = {
    "arms": ARMS,
    "covariates": {},
    "adjust_for": [],
    "exclude_episode_time": True,
    "models": [{"name": "poisson_rate", "kind": "poisson"}],
}
POISSON_CLAIM = {
    "id": "x",
    "statement": "s",
    "metric": "rate_reduction",
    "claimed": 0.4,
    "model": "poisson_rate",
}
# Fixed follow-up, no dropout, no frailty: the closed-form Poisson power applies exactly.
POISSON_DESIGN = {
    "n": 200,
    "followup_days": 182,
    "dropout": 0.0,
    "rate_per_day": 0.01,
    "frailty_var": 0.0,
    "arms": ["control", "intervention"],
}


def test_grid_mde_matches_closed_form_poisson():
    """The MDE read off a probit fit across 4 simulated reductions (20 replicates each) lies
    within 3 Monte Carlo SEs of the closed form's (0.274); the MC SE is small enough (< 0.03)
    that a misread curve, e.g. the MDE at 50% power (0.18), would fail."""
    grid = [0.1, 0.2, 0.3, 0.4]
    reps = pd.concat(
        [
            simulate_replicates(
                POISSON_CLAIM, POISSON_DESIGN, POISSON_CONFIG, range(20), grid_seed(5, k), red
            )
            for k, red in enumerate(grid)
        ]
    )
    out = mde_from_grid(reps)
    expected = closed_form_poisson_mde(100, 0.01, 182)
    assert expected == pytest.approx(0.274, abs=0.001)
    assert out["mde_80_note"] == ""
    assert 0 < out["mde_80_mc_se"] < 0.03
    assert abs(out["mde_80"] - expected) < 3 * out["mde_80_mc_se"], (out["mde_80"], expected)
    assert [p["replicates"] for p in out["mde_grid"]] == [20] * 4


def _probit_grid(rng, a, b, x, n):
    k = rng.binomial(n, stats.norm.cdf(a + b * x))
    rows = []
    for xi, ki in zip(x, k, strict=True):
        red = -math.expm1(xi)
        rows += [{"reduction": red, "estimate": -1.0, "p_value": 0.0, "converged": True}] * ki
        rows += [{"reduction": red, "estimate": -1.0, "p_value": 1.0, "converged": True}] * (n - ki)
    return pd.DataFrame(rows)


def test_delta_method_mc_se_matches_the_spread_of_mde_estimates():
    """Rejections drawn from a known probit curve: the MDE estimates centre on the true one and
    their standard deviation over 300 repeats matches the mean delta-method MC SE within 15%."""
    rng = np.random.default_rng(1)
    a, b = -1.9, -9.0  # power 80% at x = (0.8416 + 1.9) / -9
    x = np.log1p(-np.array([0.1, 0.2, 0.3, 0.4]))
    true = -math.expm1((stats.norm.ppf(0.8) - a) / b)
    est, ses = [], []
    for _ in range(300):
        out = mde_from_grid(_probit_grid(rng, a, b, x, 40))
        if out["mde_80"] is not None:
            est.append(out["mde_80"])
            ses.append(out["mde_80_mc_se"])
    assert len(est) >= 295
    sd = float(np.std(est, ddof=1))
    assert np.mean(ses) == pytest.approx(sd, rel=0.15)
    assert abs(np.mean(est) - true) < 3 * sd / math.sqrt(len(est))


def test_mde_outside_the_grid_is_missing_with_a_note():
    rng = np.random.default_rng(2)
    x = np.log1p(-np.array([0.3, 0.4, 0.5]))
    # power well above 80% at every grid point: 80% lies below the smallest reduction
    for slope in (-9.0, -20.0):  # (some replicates not rejecting, or none)
        out = mde_from_grid(_probit_grid(rng, -1.9, slope, x, 50))
        assert out["mde_80"] is None and out["mde_80_mc_se"] is None
        note = out["mde_80_note"]
        assert "below the smallest" in note and "not extrapolated" in note, note
    # far too little power: above the largest
    out = mde_from_grid(_probit_grid(rng, -1.9, -1.0, x, 50))
    assert out["mde_80"] is None and "above the largest" in out["mde_80_note"]
    # a single point cannot give a curve
    assert mde_from_grid(_probit_grid(rng, -1.9, -9.0, x[:1], 50))["mde_80"] is None
    with pytest.raises(ValueError):  # a clean 0-to-1 step has no probit MLE
        _probit_fit(np.array([0.0, -0.1, -0.2]), np.array([0.0, 50.0, 50.0]), np.full(3, 50.0))


def test_summary_keeps_normal_approximation_and_informative_dropout():
    reps = simulate_replicates(POISSON_CLAIM, POISSON_DESIGN, POISSON_CONFIG, range(6), seed=3)
    inf = simulate_replicates(
        POISSON_CLAIM, POISSON_DESIGN, POISSON_CONFIG, range(6), seed=3, dropout_link=1.0
    )
    s = summarize_power(reps, 0.4, grid=None, informative=inf, informative_link=1.0)
    assert s["mde_80"] is None and s["mde_80_note"] == "no grid simulated"
    assert 0 < s["mde_80_normal"] < 1 and s["mde_80_normal_mc_se"] > 0
    assert s["informative_dropout_link"] == 1.0 and 0 <= s["power_informative_dropout"] <= 1
    # no frailty in this design: the informative scenario is the same cohorts, the same fits
    pd.testing.assert_frame_equal(reps, inf)
    json.dumps(s, allow_nan=False)  # JSON-safe: missing values are null, not NaN


def test_same_seed_same_numbers():
    design = {**POISSON_DESIGN, "frailty_var": 0.5, "dropout": 0.2}
    one = simulate_replicates(POISSON_CLAIM, design, POISSON_CONFIG, range(3), 9, 0.3, 1.0)
    two = simulate_replicates(POISSON_CLAIM, design, POISSON_CONFIG, range(3), 9, 0.3, 1.0)
    assert one.to_csv() == two.to_csv()


# ---------------------------------------------------------------------------- pain claims

PAIN_CONFIG = {
    "arms": ARMS,
    "covariates": {},
    "adjust_for": [],
    "models": [{"name": "pain_mixed", "kind": "mixed_pain"}],
}


@pytest.fixture(scope="module")
def pain_fit():
    """The pain model fitted on a simulated cohort (the design's means and variance parts)."""
    t = simulate_cohort(SimulationParams(n=200, seed=31))
    spec = model_specs(PAIN_CONFIG)[0]
    res = fit_spec(spec, {"pain_scores": t["pain_scores"], "participants": t["participants"]})
    assert res.converged
    return pain_design_from_fit(
        res.extras["percent_change"], res.extras["variance_components"], ARMS
    )


def test_pain_means_under_the_claim(pain_fit):
    ctrl, intv = pain_means_under_claim(pain_fit, 0.5, 6, "between_arm")
    weeks = pain_fit["weeks"]
    assert ctrl[0] == intv[0]  # randomised: one baseline
    assert np.allclose(intv[1:], 0.5 * ctrl[1:])
    assert np.allclose(ctrl[1:], pain_fit["mean_control"][1:])
    ctrl, intv = pain_means_under_claim(pain_fit, 0.5, 6, "within_arm")
    assert intv[weeks.index(6)] == pytest.approx(0.5 * intv[0])
    with pytest.raises(ValueError):
        pain_means_under_claim(pain_fit, 0.5, 5, "within_arm")  # not a visit week


def test_pain_replicates_recover_the_claimed_reduction(pain_fit):
    """Simulated under a claimed 60% within-arm reduction at week 6 (the fitted cohort's own is
    82%), 12 refits of the pain model estimate 60%: mean within 3 MC SEs, MC SE below 0.02; and
    a study of 60 has full power for it."""
    claim = {"id": "p", "statement": "s", "metric": "pain_reduction", "claimed": 0.6, "week": 6}
    inputs = pain_power_inputs({**claim, "model": "pain_mixed"}, PAIN_CONFIG)
    assert inputs["contrast"] == "within_arm"
    design = {"n": 60, "allocation": 0.5, "followup_days": 182, "followup_percentiles": [182]}
    reps = simulate_pain_from_inputs(inputs, design, pain_fit, range(12), seed=4)
    s = summarize_pain_power(reps, 0.6)
    assert s["converged"] == 12
    assert s["mean_estimate_mc_se"] < 0.02
    assert abs(s["mean_estimate"] - 0.6) < 3 * s["mean_estimate_mc_se"], s
    assert s["power"] == 1.0
    again = simulate_pain_from_inputs(inputs, design, pain_fit, range(2), seed=4)
    assert again.to_csv() == reps.iloc[:2].to_csv()
