"""Claims: the verdict rules on constructed cases, estimates read from models, power by
simulation against the closed form, and whole cohorts simulated with known truth."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from recurstudy.claims import VERDICTS, add_power, e_value, evaluate_claim, verdict
from recurstudy.derive import derive_all
from recurstudy.models import fit_spec, model_specs
from recurstudy.models.base import TIDY_COLUMNS
from recurstudy.power import closed_form_poisson_power, simulate_replicates, summarize_power
from recurstudy.simulate import SimulationParams, simulate_cohort

ARMS = {"control": "control", "intervention": "intervention"}


@pytest.mark.parametrize(
    ("est", "lo", "hi", "margin", "expected"),
    [
        (0.70, 0.55, 0.80, None, "supported"),  # holds 0.68, excludes 0
        (0.70, 0.55, 0.80, 0.05, "consistent but imprecise"),  # wider than the margin
        (0.69, 0.65, 0.72, 0.05, "supported"),  # within the margin
        (0.50, -0.10, 0.75, None, "consistent but imprecise"),  # holds 0.68 and 0
        (0.40, 0.25, 0.55, None, "smaller than claimed"),  # excludes 0.68 and 0
        (0.05, -0.20, 0.25, None, "contradicted"),  # excludes 0.68, holds 0
        (-0.30, -0.60, -0.05, None, "contradicted"),  # harm
        (0.90, 0.85, 0.95, None, "supported"),  # larger than claimed
        (float("nan"), 0.1, 0.2, None, "not estimable"),
    ],
)
def test_verdict_rules(est, lo, hi, margin, expected):
    v, reason = verdict(est, lo, hi, 0.68, margin)
    assert v == expected and v in VERDICTS and reason


def _estimates(beta, se, converged=True, model="negbin_rate"):
    z = 1.959963984540054
    row = dict.fromkeys(TIDY_COLUMNS, np.nan)
    row.update(
        model=model,
        term="arm[T.intervention]",
        estimate=beta,
        std_error=se,
        conf_low=beta - z * se,
        conf_high=beta + z * se,
        p_value=2 * (1 - stats.norm.cdf(abs(beta / se))),
        converged=converged,
        message="" if converged else "did not converge",
    )
    return pd.DataFrame([row])


CLAIM = {"id": "c", "statement": "s", "metric": "rate_reduction", "claimed": 0.68}


def test_rate_claim_arithmetic(tmp_path):
    beta, se = math.log(0.30), 0.12
    out = evaluate_claim(CLAIM, _estimates(beta, se), tmp_path, {"arms": ARMS})
    assert out["model"] == "negbin_rate"
    assert out["estimate"] == pytest.approx(0.70, rel=1e-12)
    assert out["conf_low"] == pytest.approx(1 - math.exp(beta + 1.959963984540054 * se))
    z = (beta - math.log(0.32)) / se
    assert out["p_value_claimed"] == pytest.approx(2 * (1 - stats.norm.cdf(abs(z))))
    assert out["verdict"] == "supported" and out["claimed_in_ci"]


def test_unconverged_or_missing_model_is_not_estimable(tmp_path):
    out = evaluate_claim(CLAIM, _estimates(-1.0, 0.1, converged=False), tmp_path, {"arms": ARMS})
    assert out["verdict"] == "not estimable" and "did not converge" in out["reason"]
    other = {**CLAIM, "model": "andersen_gill"}
    out = evaluate_claim(other, _estimates(-1.0, 0.1), tmp_path, {"arms": ARMS})
    assert out["verdict"] == "not estimable" and "andersen_gill" in out["reason"]


def test_pain_claim_reads_percent_change(tmp_path):
    (tmp_path / "pain_mixed").mkdir()
    pd.DataFrame(
        {
            "arm": ["intervention", "intervention"],
            "week": [0, 6],
            "percent_change": [0.0, -60.0],
            "conf_low": [0.0, -70.0],
            "conf_high": [0.0, -50.0],
        }
    ).to_csv(tmp_path / "pain_mixed" / "percent_change.csv", index=False)
    claim = {"id": "p", "statement": "s", "metric": "pain_reduction", "claimed": 0.82}
    out = evaluate_claim(claim, _estimates(0.1, 0.1, model="pain_mixed"), tmp_path, {"arms": ARMS})
    assert out["estimate"] == pytest.approx(0.60)
    assert (out["conf_low"], out["conf_high"]) == pytest.approx((0.50, 0.70))
    assert out["verdict"] == "smaller than claimed"


def test_add_power_and_e_value():
    t = pd.DataFrame({"claim_id": ["a", "b"]})
    out = add_power(t, {"a": {"power": 0.9, "mde_80": 0.3}})
    assert out.loc[0, "power"] == 0.9 and pd.isna(out.loc[1, "power"])
    # E-value of RR 0.5: 1/0.5 + sqrt(2 * 1) = 3.414...; interval holding 1 gives 1
    ev = e_value(0.5, 0.3, 0.8)
    assert ev["e_value"] == pytest.approx(2 + math.sqrt(2))
    assert ev["e_value_ci"] == pytest.approx(1 / 0.8 + math.sqrt(1 / 0.8 * (1 / 0.8 - 1)))
    assert e_value(0.5, 0.2, 1.1)["e_value_ci"] == 1.0


POISSON_CONFIG = {
    "arms": ARMS,
    "covariates": {},
    "adjust_for": [],
    "exclude_episode_time": True,
    "models": [{"name": "poisson_rate", "kind": "poisson"}],
}


def test_power_matches_closed_form_for_poisson():
    """Fixed follow-up, no dropout, no frailty: simulated power = closed form within MC error."""
    design = {
        "n": 200,
        "followup_days": 182,
        "dropout": 0.0,
        "rate_per_day": 0.002,
        "frailty_var": 0.0,
        "arms": ["control", "intervention"],
    }
    claim = {
        "id": "x",
        "statement": "s",
        "metric": "rate_reduction",
        "claimed": 0.4,
        "model": "poisson_rate",
    }
    reps = simulate_replicates(claim, design, POISSON_CONFIG, range(400), seed=5)
    s = summarize_power(reps, 0.4)
    expected = closed_form_poisson_power(100, 0.002, 0.6, 182)
    assert 0.3 < expected < 0.7  # a design where power is informative
    assert s["converged"] == 400
    assert abs(s["power"] - expected) < 3 * s["power_mc_se"] + 0.02, (s["power"], expected)
    se_closed = math.sqrt(1 / (100 * 0.002 * 182) + 1 / (100 * 0.002 * 182 * 0.6))
    assert s["median_std_error"] == pytest.approx(se_closed, rel=0.08)
    assert s["mde_80"] == pytest.approx(1 - math.exp(-2.8016 * se_closed), rel=0.08)


def _claim_on_simulated(rate_ratio, n, seed):
    params = SimulationParams(n=n, seed=seed, rate_ratio=rate_ratio)
    t = simulate_cohort(params)
    config = {
        "arms": ARMS,
        "covariates": {},
        "adjust_for": [],
        "models": [{"name": "negbin_rate", "kind": "negbin"}],
    }
    data = derive_all(t["participants"], t["episodes"], config)
    spec = model_specs(config)[0]
    est = fit_spec(spec, dict(data)).table
    return evaluate_claim(CLAIM, est, "unused", config)


def test_true_effect_is_consistent_with_the_claim():
    out = _claim_on_simulated(0.32, 300, seed=101)
    assert out["verdict"] in ("supported", "consistent but imprecise"), out
    assert out["claimed_in_ci"]


def test_no_effect_in_a_large_cohort_contradicts_the_claim():
    out = _claim_on_simulated(1.0, 3000, seed=102)
    assert out["verdict"] == "contradicted", out
    assert out["p_value_claimed"] < 1e-6
