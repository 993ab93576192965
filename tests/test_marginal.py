"""The marginal_mean model and the Andersen-Gill fitted mean function
(recurstudy.models.marginal) against R, hand computations and simulation.

References (tests/fixtures/marginal, made by make_marginal_data.py and
make_marginal_reference.R with R 4.2 / survival 3.5-3 / mets 1.3.2):
- per-arm mean functions and robust SEs: survfit(Surv(start, stop, event) ~ arm,
  id = participant_id, robust = TRUE), and mets::recurrentMarginal on the untied cohort;
- ratio and difference: the delta-method arithmetic done in R on survfit's numbers, and by hand
  (exact fractions) on the tiny cohort;
- pseudo-score test: coxph(..., ties = "breslow")$rscore on the data cut at tau, a brute-force
  double loop in R, the hand computation, and its null distribution by simulation;
- Andersen-Gill mean function: survfit(coxph fit, newdata, ctype = 1)$cumhaz.

Where the estimator is R's the tolerance is relative 1e-10 (measured: 3e-15; p-values, whose
tails amplify rounding, 2e-13); counts and time points must match exactly.  Simulation tolerances
are three Monte Carlo standard errors of the quantity checked (fixed seeds, so the outcome does
not change from run to run).
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES, r_reference, read_cohort

from recurstudy.models import ModelSpec, OptionError, fit_spec, model_specs
from recurstudy.models.base import REGISTRY, parse_options
from recurstudy.models.marginal import (
    MarginalMean,
    MarginalMeanOptions,
    compare_means,
    mean_at,
    planned_followup,
    proportional_rates_mean,
    pseudo_score_test,
)
from recurstudy.models.survival import mean_cumulative_function

FIX = FIXTURES / "marginal"
RTOL = 1e-10
ARM = "arm[T.intervention]"
ARMS = ("control", "intervention")
COHORTS = ("demo", "cont", "tiny")


def ref(cohort: str) -> dict:
    return r_reference(FIX / "marginal_reference.json")[cohort]


def read(cohort: str) -> pd.DataFrame:
    return read_cohort(FIX / f"{cohort}_counting_process.csv")


def rel(actual, expected) -> float:
    a = np.asarray(actual, dtype=float).reshape(-1)
    e = np.asarray(expected, dtype=float).reshape(-1)
    assert a.shape == e.shape, (a.shape, e.shape)
    return float(np.max(np.abs(a - e) / np.maximum(np.abs(e), 1e-300)))


def fit(cohort_or_frame, tau: int | None = None, **spec):
    cp = read(cohort_or_frame) if isinstance(cohort_or_frame, str) else cohort_or_frame
    options = {} if tau is None else {"tau": tau}
    return fit_spec(
        ModelSpec("mm", "marginal_mean", options=options, **spec), {"counting_process": cp}
    )


def taus(cohort: str) -> list[tuple[str, int]]:
    return [(cohort, int(at["tau"])) for at in ref(cohort)["at_tau"]]


ALL_TAUS = [ct for c in COHORTS for ct in taus(c)]


# ------------------------------------------------------------------------------------------------
# The model's self-description and options
# ------------------------------------------------------------------------------------------------


def test_registered_with_its_description_and_options():
    assert REGISTRY["marginal_mean"] is MarginalMean
    d = MarginalMean().describe()
    assert d.effect_measure == "ratio of mean numbers of episodes" and d.ratio
    assert d.claim_metrics == ("rate_reduction",)
    assert [e.file for e in d.extras] == ["means", "difference", "pseudo_score"]
    assert all(e.caption for e in d.extras)
    assert "planned follow-up" in d.estimand
    assert d.reference == "Lawless and Nadeau (1995); Cook, Lawless and Nadeau (1996)"
    assert "robust = TRUE" in d.r_call
    assert not MarginalMean.adjustable
    at = MarginalMean().describe(ModelSpec("mm", "marginal_mean", options={"tau": 91}))
    assert "by day 91" in at.estimand and "planned follow-up" not in at.estimand


def test_tau_option_is_checked():
    assert parse_options(MarginalMeanOptions, {}, "mm").tau is None
    assert parse_options(MarginalMeanOptions, {"tau": 182}, "mm").tau == 182
    for bad in (0, 91.5, "182", True):
        with pytest.raises(OptionError, match="model 'mm': option 'tau'"):
            parse_options(MarginalMeanOptions, {"tau": bad}, "mm")
    with pytest.raises(OptionError, match="unknown option 'weight'"):
        parse_options(MarginalMeanOptions, {"weight": 1}, "mm")
    # no _adjusted variant, even with adjust_for
    config = {"models": [{"name": "mm", "kind": "marginal_mean"}], "adjust_for": ["age"]}
    assert [s.name for s in model_specs(config)] == ["mm"]


# ------------------------------------------------------------------------------------------------
# Against R
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cohort", COHORTS)
def test_default_tau_is_the_planned_follow_up(cohort):
    cp = read(cohort)
    r = ref(cohort)
    assert planned_followup(cp, ARMS) == r["tau_default"]
    res = fit(cohort)
    assert res.converged, res.message
    assert (res.extras["means"]["tau"] == r["tau_default"]).all()
    assert res.table["message"].iloc[0] == f"tau = {r['tau_default']:g} days"
    # cont: the intervention arm is followed to day 170, the control arm to 182
    if cohort == "cont":
        assert r["tau_default"] == 170 == cp.loc[cp["arm"] == "intervention", "stop"].max()


@pytest.mark.parametrize(("cohort", "tau"), ALL_TAUS)
def test_means_by_arm_match_survfit_robust(cohort, tau):
    at = next(a for a in ref(cohort)["at_tau"] if a["tau"] == tau)
    means = fit(cohort, tau).extras["means"]
    assert list(means["arm"]) == list(ARMS)
    r = at["arms"]
    assert rel(means["mean"], [a["mean"] for a in r]) < RTOL
    assert rel(means["std_err"], [a["std_err"] for a in r]) < RTOL
    assert list(means["n_risk"]) == [a["n_risk"] for a in r]
    assert list(means["n_events"]) == [a["n_events"] for a in r]
    # the interval is the plain one of the MCF table (R's plot.survfit), floored at 0
    z = 1.959963984540054
    np.testing.assert_allclose(
        means["conf_low"], np.maximum(means["mean"] - z * means["std_err"], 0), rtol=1e-14
    )
    np.testing.assert_allclose(means["conf_high"], means["mean"] + z * means["std_err"], rtol=1e-14)


@pytest.mark.parametrize("cohort", COHORTS)
def test_mean_at_any_time_matches_the_survfit_curve(cohort):
    cp = read(cohort)
    for curve in ref(cohort)["curves"]:
        g = cp[cp["arm"] == curve["arm"]]
        pick = np.unique(np.linspace(0, len(curve["time"]) - 1, 25).astype(int))
        times = np.asarray(curve["time"])[pick]
        got = [mean_at(g, t) for t in times]
        assert rel([m.mean for m in got], np.asarray(curve["cumhaz"])[pick]) < RTOL
        assert rel([m.std_err for m in got], np.asarray(curve["std_chaz"])[pick]) < RTOL


@pytest.mark.parametrize(("cohort", "tau"), ALL_TAUS)
def test_ratio_and_difference_match_the_delta_method_in_r(cohort, tau):
    at = next(a for a in ref(cohort)["at_tau"] if a["tau"] == tau)
    res = fit(cohort, tau)
    row = res.table.iloc[0]
    assert row["term"] == ARM and bool(row["robust"]) and bool(row["converged"])
    assert rel(row["estimate"], at["log_ratio"]) < RTOL
    assert rel(row["std_error"], at["se_log_ratio"]) < RTOL
    assert rel(row["exp_estimate"], at["ratio"]) < RTOL
    assert (
        rel([row["exp_conf_low"], row["exp_conf_high"]], [at["ratio_low"], at["ratio_high"]]) < RTOL
    )
    assert rel(row["p_value"], at["p_ratio"]) < 1e-9  # a p of 1e-20 carries rounding of z^2
    diff = res.extras["difference"].iloc[0]
    assert rel(diff["estimate"], at["difference"]) < RTOL
    assert rel(diff["std_err"], at["se_difference"]) < RTOL
    assert rel([diff["conf_low"], diff["conf_high"]], [at["diff_low"], at["diff_high"]]) < RTOL
    assert rel(diff["p_value"], at["p_difference"]) < 1e-9
    assert row["n_events"] == sum(a["n_events"] for a in at["arms"])
    assert row["n_participants"] == read(cohort)["participant_id"].nunique()


@pytest.mark.parametrize("tau", [a["tau"] for a in ref("cont")["mets"]])
def test_means_match_mets_recurrent_marginal_without_death(tau):
    cp = read("cont")
    mets = next(m for m in ref("cont")["mets"] if m["tau"] == tau)
    for a in mets["arms"]:
        m = mean_at(cp[cp["arm"] == a["arm"]], tau)
        assert rel(m.mean, a["mu"]) < RTOL
        assert rel(m.std_err, a["se_mu"]) < RTOL


@pytest.mark.parametrize(("cohort", "tau"), ALL_TAUS)
def test_pseudo_score_matches_coxph_rscore_and_a_brute_force_loop(cohort, tau):
    r = next(p for p in ref(cohort)["pseudo_score"] if p["tau"] == tau)
    ps = fit(cohort, tau).extras["pseudo_score"].iloc[0]
    assert rel(ps["statistic"], r["rscore"]) < RTOL  # coxph(ties = "breslow")$rscore
    assert rel(ps["score"], r["brute"]["score"]) < RTOL
    assert rel(ps["variance"], r["brute"]["variance"]) < RTOL
    assert rel(ps["statistic"], r["brute"]["statistic"]) < RTOL
    # the model-based (Poisson) counterpart is coxph's score test
    assert rel(ps["score"] ** 2 / ps["variance_naive"], r["score_test"]) < RTOL
    assert ps["score"] == pytest.approx(ps["observed"] - ps["expected"], abs=1e-9)
    assert ps["df"] == 1 and ps["tau"] == tau


# ------------------------------------------------------------------------------------------------
# By hand and against the project's own mean cumulative function
# ------------------------------------------------------------------------------------------------


def test_tiny_cohort_by_hand():
    """Control: mu = 1/3 + 1/3 + 1/3 = 1, U = (1/3, 0, -1/3), V = 2/9; intervention: mu = 2/3,
    U = (1/9, -2/9, 1/9), V = 6/81.  Pseudo-score: O - E = 2 - 12/5, U_i = (-73, -13, 62, 7, -68,
    25) / 150, naive variance 2/4 + 2/4 + 6/25 (see the module docstring for the formulas)."""
    res = fit("tiny")
    means = res.extras["means"].set_index("arm")
    f = float
    assert means.loc["control", "mean"] == pytest.approx(1.0, abs=1e-15)
    assert means.loc["intervention", "mean"] == pytest.approx(f(Fraction(2, 3)), abs=1e-15)
    assert means.loc["control", "std_err"] ** 2 == pytest.approx(f(Fraction(2, 9)), abs=1e-15)
    assert means.loc["intervention", "std_err"] ** 2 == pytest.approx(f(Fraction(6, 81)), abs=1e-15)
    row = res.table.iloc[0]
    assert row["exp_estimate"] == pytest.approx(2 / 3, abs=1e-15)
    assert row["std_error"] ** 2 == pytest.approx(f(Fraction(7, 18)), abs=1e-15)
    diff = res.extras["difference"].iloc[0]
    assert diff["estimate"] == pytest.approx(-1 / 3, abs=1e-15)
    assert diff["std_err"] ** 2 == pytest.approx(f(Fraction(8, 27)), abs=1e-15)
    ps = res.extras["pseudo_score"].iloc[0]
    u = np.array([-73, -13, 62, 7, -68, 25]) / 150
    assert ps["score"] == pytest.approx(u.sum(), abs=1e-15) and u.sum() == pytest.approx(-0.4)
    assert ps["variance"] == pytest.approx(f(Fraction(14640, 22500)), abs=1e-15)
    assert ps["variance_naive"] == pytest.approx(1.24, abs=1e-15)
    m = mean_at(read("tiny").query("arm == 'control'"), 4)
    np.testing.assert_allclose(m.influence, [1 / 3, 0, -1 / 3], atol=1e-15)


@pytest.mark.parametrize("cohort", COHORTS)
def test_agrees_with_mean_cumulative_function(cohort):
    """At tau, the mean and SE equal the project's MCF table (its last row at or before tau),
    and the influence terms of an arm sum to 0 (sum_i [dN_i - Y_i d / Y] / Y = 0 at each t)."""
    cp = read(cohort)
    tau = planned_followup(cp, ARMS)
    for a in ARMS:
        g = cp[cp["arm"] == a]
        m = mean_at(g, tau)
        mcf = mean_cumulative_function(g)
        last = mcf[mcf["time"] <= tau].iloc[-1]
        assert rel(m.mean, last["mcf"]) < 1e-12
        assert rel(m.std_err, last["std_err"]) < 1e-12
        assert abs(m.influence.sum()) < 1e-12 * len(m.influence)
        assert len(m.participants) == g["participant_id"].nunique()


def test_ratio_variance_is_the_influence_sum():
    """Var log ratio = sum over participants of (U_i / mu_arm)^2: the same number written as an
    influence sum, not as V_I / mu_I^2 + V_C / mu_C^2."""
    cp = read("cont")
    c, i = (mean_at(cp[cp["arm"] == a], 150) for a in ARMS)
    infl = np.concatenate([-c.influence / c.mean, i.influence / i.mean])
    cmp = compare_means(c, i)
    assert rel(cmp["se_log_ratio"], np.sqrt(infl @ infl)) < 1e-13
    infl = np.concatenate([-c.influence, i.influence])
    assert rel(cmp["se_difference"], np.sqrt(infl @ infl)) < 1e-13


def test_row_order_and_ids_do_not_matter():
    cp = read("cont")
    base = fit(cp, 120)
    shuffled = cp.sample(frac=1.0, random_state=3)
    shuffled["participant_id"] = "x" + shuffled["participant_id"]
    other = fit(shuffled, 120)
    cols = ["estimate", "std_error", "p_value"]
    np.testing.assert_allclose(other.table[cols], base.table[cols], rtol=1e-13)
    pd.testing.assert_frame_equal(other.extras["means"], base.extras["means"], rtol=1e-13)
    ps = pseudo_score_test(shuffled, 120, "intervention")
    pd.testing.assert_frame_equal(ps, base.extras["pseudo_score"], rtol=1e-13)


# ------------------------------------------------------------------------------------------------
# Options, labels and failures
# ------------------------------------------------------------------------------------------------


def test_tau_option_and_tau_past_follow_up():
    res = fit("cont", 120)
    assert res.converged and (res.extras["means"]["tau"] == 120).all()
    assert res.table["message"].iloc[0] == "tau = 120 days"
    late = fit("cont", 171)
    assert not late.converged
    row = late.table.iloc[0]
    assert row["term"] == ARM and np.isnan(row["estimate"])
    assert "tau = 171 days is past the planned follow-up (day 170" in row["message"]


def test_arm_without_episodes_is_a_failed_row_with_a_message():
    cp = read("cont")
    cp.loc[cp["arm"] == "intervention", "event"] = 0
    res = fit(cp)
    assert not res.converged
    row = res.table.iloc[0]
    assert row["term"] == ARM and np.isnan(row["estimate"]) and not bool(row["converged"])
    assert "no episodes by day 170 in the intervention arm" in row["message"]
    assert "not estimable" in row["message"]
    # the difference is still estimable and given
    means = res.extras["means"].set_index("arm")
    assert means.loc["intervention", "mean"] == 0 and means.loc["intervention", "std_err"] == 0
    diff = res.extras["difference"].iloc[0]
    assert diff["estimate"] == pytest.approx(-means.loc["control", "mean"], rel=1e-15)
    assert diff["std_err"] == pytest.approx(means.loc["control", "std_err"], rel=1e-15)


def test_one_arm_only_and_custom_labels():
    cp = read("tiny")
    res = fit(cp[cp["arm"] == "control"])
    assert not res.converged and "no participants in the intervention arm" in res.message
    relabelled = cp.assign(arm=cp["arm"].map({"control": "usual", "intervention": "NMR"}))
    res = fit(relabelled, arms={"control": "usual", "intervention": "NMR"})
    assert res.converged and res.table["term"].iloc[0] == "arm[T.NMR]"
    assert res.table["exp_estimate"].iloc[0] == pytest.approx(2 / 3, abs=1e-15)
    assert list(res.extras["means"]["arm"]) == ["usual", "NMR"]


# ------------------------------------------------------------------------------------------------
# Andersen-Gill read as the proportional rates model
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cohort", COHORTS)
def test_andersen_gill_mean_function_matches_survfit_coxph(cohort):
    r = ref(cohort)["ag_mean"]
    res = fit_spec(ModelSpec("ag", "andersen_gill"), {"counting_process": read(cohort)})
    assert rel(res.table["estimate"], r["coef"]) < RTOL
    mf = res.extras["mean_function"]
    for a in ARMS:
        got = mf[mf["arm"] == a]
        np.testing.assert_array_equal(got["time"].to_numpy(float), r["time"])
        assert rel(got["mean"], r[a]) < RTOL
    # mu_I(t) / mu_C(t) = exp(beta) at every t
    ratio = (
        mf[mf["arm"] == "intervention"]["mean"].to_numpy()
        / mf[mf["arm"] == "control"]["mean"].to_numpy()
    )
    np.testing.assert_allclose(ratio, res.table["exp_estimate"].iloc[0], rtol=1e-14)


def test_andersen_gill_mean_function_only_for_the_crude_fit():
    from recurstudy.models.survival import AndersenGill

    assert "mean_function" in [e.file for e in AndersenGill().describe().extras]
    cp = read("demo")
    cp["age"] = np.arange(len(cp)) % 40 + 18.0
    adj = fit_spec(ModelSpec("ag_adjusted", "andersen_gill", "arm + age"), {"counting_process": cp})
    assert adj.converged and "mean_function" not in adj.extras
    # beta = 0: both arms' fitted mean is the pooled Nelson-Aalen mean function
    mf = proportional_rates_mean(cp, 0.0, control="control", intervention="intervention")
    pooled = mean_cumulative_function(cp)
    for a in ARMS:
        np.testing.assert_allclose(mf[mf["arm"] == a]["mean"], pooled["mcf"], rtol=1e-13)


# ------------------------------------------------------------------------------------------------
# Simulation: known mean functions
# ------------------------------------------------------------------------------------------------


def simulate(rng, n_arm: int, rate: float, ratio: float, frailty_var: float) -> pd.DataFrame:
    """Episodes as a Poisson process with a gamma frailty (mean 1): E N_a(t) = rate ratio^a t,
    whatever the frailty.  Follow-up min(182, uniform 120-400 days, exponential drop-out with
    mean 900 days), independent of the episodes; back-to-back rows, times continuous."""
    n = 2 * n_arm
    z = np.repeat([0, 1], n_arm)
    frail = rng.gamma(1 / frailty_var, frailty_var, n)
    follow = np.minimum.reduce(
        [np.full(n, 182.0), rng.uniform(120, 400, n), rng.exponential(900, n)]
    )
    n_ev = rng.poisson(rate * ratio**z * frail * follow)
    who = np.repeat(np.arange(n), n_ev)
    t = rng.uniform(0, follow[who])
    sub = np.concatenate([who, np.arange(n)])
    stop = np.concatenate([t, follow])
    event = np.concatenate([np.ones(who.size, int), np.zeros(n, int)])
    o = np.lexsort((stop, sub))
    sub, stop, event = sub[o], stop[o], event[o]
    start = np.r_[0.0, stop[:-1]]
    start[np.r_[True, sub[1:] != sub[:-1]]] = 0.0
    return pd.DataFrame(
        {
            "participant_id": sub,
            "arm": np.where(z[sub] == 1, "intervention", "control"),
            "start": start,
            "stop": stop,
            "event": event,
        }
    )


def test_simulation_recovers_the_true_ratio_with_nominal_coverage():
    """400 cohorts of 2 x 150 participants, control mean 0.02 / day, true ratio 0.32, gamma
    frailty variance 0.5: at tau = 182 the ratio is unbiased on the log scale and its 95%
    interval, the difference's and each arm's interval cover the truth in 95% of cohorts, within
    3 Monte Carlo SEs (sqrt(0.95 * 0.05 / 400) = 0.011)."""
    rng = np.random.default_rng(20261204)
    reps, tau, rate, ratio = 400, 182, 0.02, 0.32
    mu = {"control": rate * tau, "intervention": rate * ratio * tau}
    z = 1.959963984540054
    log_ratio, cover_ratio, cover_diff, cover_arm = [], 0, 0, {a: 0 for a in ARMS}
    for _ in range(reps):
        cp = simulate(rng, 150, rate, ratio, 0.5)
        c, i = (mean_at(cp[cp["arm"] == a], tau) for a in ARMS)
        cmp = compare_means(c, i)
        log_ratio.append(cmp["log_ratio"])
        lo, hi = (
            cmp["log_ratio"] - z * cmp["se_log_ratio"],
            cmp["log_ratio"] + z * cmp["se_log_ratio"],
        )
        cover_ratio += lo <= np.log(ratio) <= hi
        cover_diff += cmp["diff_low"] <= mu["intervention"] - mu["control"] <= cmp["diff_high"]
        for a, m in zip(ARMS, (c, i), strict=True):
            cover_arm[a] += abs(m.mean - mu[a]) <= z * m.std_err
    mc = 3 * np.sqrt(0.95 * 0.05 / reps)
    log_ratio = np.array(log_ratio)
    # bias of the log ratio: within 3 Monte Carlo SEs of its mean
    assert abs(log_ratio.mean() - np.log(ratio)) < 3 * log_ratio.std() / np.sqrt(reps)
    assert abs(cover_ratio / reps - 0.95) < mc, cover_ratio / reps
    assert abs(cover_diff / reps - 0.95) < mc, cover_diff / reps
    for a in ARMS:
        assert abs(cover_arm[a] / reps - 0.95) < mc, (a, cover_arm[a] / reps)


def test_pseudo_score_test_has_its_size_under_the_null_and_the_naive_one_does_not():
    """400 cohorts with equal mean functions and frailty variance 1 (episodes cluster within
    participants): the robust pseudo-score test rejects at 5% in 5% of cohorts (within 3 Monte
    Carlo SEs, 0.033) and its z = U / sqrt(V) has variance 1 (within 3 SEs, 3 sqrt(2 / 400));
    the Poisson-variance version rejects far more often."""
    rng = np.random.default_rng(7)
    reps = 400
    zs, naive = [], []
    for _ in range(reps):
        ps = pseudo_score_test(simulate(rng, 100, 0.02, 1.0, 1.0), 182, "intervention").iloc[0]
        zs.append(ps["score"] / np.sqrt(ps["variance"]))
        naive.append(ps["score"] / np.sqrt(ps["variance_naive"]))
    zs, naive = np.array(zs), np.array(naive)
    assert abs(np.mean(np.abs(zs) > 1.959963984540054) - 0.05) < 3 * np.sqrt(0.05 * 0.95 / reps)
    assert abs(zs.var() - 1.0) < 3 * np.sqrt(2 / reps)
    assert np.mean(np.abs(naive) > 1.959963984540054) > 0.15


def test_dataclass_options_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        MarginalMeanOptions().tau = 3  # type: ignore[misc]


def test_serves_a_rate_reduction_claim_with_power(repo, tmp_path):
    """The claim "cut pain episodes by 68% over six months" read off the ratio of mean numbers of
    episodes: the config validates, the claim gets an estimate and a verdict, and the power
    simulation fits the model kind on simulated cohorts."""
    import yaml

    from recurstudy.claims import evaluate_claim
    from recurstudy.config import load_config
    from recurstudy.power import simulate_replicates

    config = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    config["models"] = [*config["models"], {"name": "mean_182", "kind": "marginal_mean"}]
    claim = {
        "id": "episodes_68_mean",
        "statement": "Re-education cut pain episodes by 68% over six months.",
        "metric": "rate_reduction",
        "claimed": 0.68,
        "model": "mean_182",
    }
    config["claims"] = [*config["claims"], claim]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    config = load_config(tmp_path / "config.yaml")  # validates, claims included
    res = fit(read("demo"))
    out = evaluate_claim(claim, res.table.assign(model="mean_182"), tmp_path, config)
    ratio = res.table["exp_estimate"].iloc[0]
    assert out["estimate"] == pytest.approx(1 - ratio, rel=1e-12)
    assert out["verdict"] in ("supported", "consistent but imprecise")
    design = {
        "n": 300,
        "allocation": 0.5,
        "followup_days": 182,
        "followup_percentiles": [],
        "rate_per_day": 0.02,
        "frailty_var": 0.5,
        "dropout": 0.1,
        "arms": ["control", "intervention"],
    }
    reps = simulate_replicates(claim, design, config, range(3), seed=11)
    assert reps["converged"].all() and (reps["estimate"] < 0).all()
