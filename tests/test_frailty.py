"""The shared gamma-frailty Cox model (kind ``frailty_cox``) against R's survival package.

Fixtures (tests/fixtures/frailty, R 4.2.2 / survival 3.5-3, ``make_frailty_reference.R``):
``coxph(Surv(start, stop, event) ~ <rhs> + frailty(participant_id))`` on the demo cohort, a
simulated cohort with frailty variance 1, one without frailty (theta goes to the boundary) and the
demo cohort with overlapping rows within participants (the general path of the frailty
information), unadjusted and adjusted; plus Breslow ties and a fixed theta on the demo cohort.

The module reproduces R's iteration path (inner Newton-Raphson with R's sparse information and
step halving, the outer theta search of frailty.controlgam / frailty.brent), so every quantity,
including theta, which R determines only to its outer tolerance (relative 1e-5 on the
I-likelihood), agrees with R to rounding.  Measured maximum relative differences over the 11
fits: 5e-14 for the coefficients, 7e-14 for the logliks, 1e-12 for var / var2 / se / se2, 7e-12
for theta and theta_next, 1e-12 for the I-likelihood, 4e-11 for the frailties (relative to the
largest), 3e-11 for the frailty test's p-value.  The tolerance here is 1e-8, far inside the 1e-5
asked for.  The iteration counts must match exactly.
"""

from __future__ import annotations

import time
from functools import cache

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES, num, r_reference, read_cohort

from recurstudy.derive import counting_process
from recurstudy.models import ModelSpec, fit_spec
from recurstudy.models.base import design
from recurstudy.models.frailty import (
    _chinv3,
    _cholesky3,
    _chsolve3,
    _FrailtyProblem,
    frailty_cox_fit,
    gammacon,
)
from recurstudy.simulate import SimulationParams, simulate_cohort

FIX = FIXTURES / "frailty"
RTOL = 1e-8
ARM = "arm[T.intervention]"
ADJ = "arm + age + prior_episodes + baseline_pain"


def reference() -> dict:
    return r_reference(FIX / "frailty_reference.json")


def read(stem: str) -> pd.DataFrame:
    return read_cohort(FIX / f"{stem}_counting_process.csv")


def assert_rel(actual, expected, what: str, rtol: float = RTOL, scale: bool = False) -> None:
    """Relative agreement (``scale``: relative to the largest |value|, for vectors near 0)."""
    a = np.asarray(actual, dtype=float).reshape(-1)
    e = num(np.asarray(expected, dtype=object).reshape(-1))
    assert a.shape == e.shape, f"{what}: {a.shape} values, R has {e.shape}"
    assert np.array_equal(np.isnan(a), np.isnan(e)), f"{what}: NaN pattern differs from R"
    ok = ~np.isnan(e)
    den = np.max(np.abs(e[ok])) if scale else np.maximum(np.abs(e[ok]), 1e-300)
    rel = np.abs(a[ok] - e[ok]) / den
    worst = float(rel.max()) if rel.size else 0.0
    assert worst <= rtol, f"{what}: max relative difference {worst:.2e} > {rtol:.0e}"


FITS = list(reference()["fits"])


def spec_for(key: str) -> ModelSpec:
    r = reference()["fits"][key]
    options = {"ties": r["ties"]}
    if "theta = 0.5" in r["frailty"]:
        options["theta"] = 0.5
    return ModelSpec(key, "frailty_cox", r["rhs"], options)


@cache
def model_result(key: str):
    return fit_spec(spec_for(key), {"counting_process": read(key.split("_")[0])})


@cache
def direct_fit(key: str):
    r = reference()["fits"][key]
    df = read(key.split("_")[0])
    X, names = design(r["rhs"], df, intercept=False)
    return frailty_cox_fit(
        X.to_numpy(),
        df["start"],
        df["stop"],
        df["event"],
        df["participant_id"],
        ties=r["ties"],
        theta=0.5 if "theta = 0.5" in r["frailty"] else None,
        names=names,
    )


# ------------------------------------------------------------------------------------------------
# Agreement with R
# ------------------------------------------------------------------------------------------------


def test_reference_versions():
    ref = reference()
    assert ref["survival_version"] == "3.5.3"
    assert ref["r_version"].startswith("R version 4.2")


@pytest.mark.parametrize("key", FITS)
def test_tidy_table_matches_r(key):
    r = reference()["fits"][key]
    res = model_result(key)
    t = res.table
    assert list(t["term"]) == [n.replace("armintervention", ARM) for n in np.atleast_1d(r["names"])]
    assert_rel(t["estimate"], r["coef"], "coef")
    assert_rel(t["std_error"], r["se"], "se(coef)")
    assert_rel(t["log_likelihood"].iloc[0], r["loglik"][1], "fit$loglik[2]")
    assert not t["robust"].any()
    n_part = 300 if key.startswith(("demo", "overlap")) else 600
    assert (t["n_participants"] == n_part).all()
    assert (t["n_events"] == r["nevent"]).all()
    se2 = res.extras["se2"]
    assert_rel(se2["se2"], r["se2"], "se2")
    assert_rel(se2["df"], r["df"][:-1], "df per term")
    if key.startswith("nofrail"):
        assert not res.converged and "boundary" in res.message
    else:
        assert res.converged, res.message


@pytest.mark.parametrize("key", FITS)
def test_theta_search_and_frailty_terms_match_r(key):
    r = reference()["fits"][key]
    f = direct_fit(key)
    assert [f.outer_iterations, f.newton_iterations] == r["iter"]
    assert_rel(f.var, r["var"], "var")
    assert_rel(f.var2, r["var2"], "var2")
    assert_rel(f.loglik, r["loglik"], "loglik")
    assert_rel(f.theta, num(r["history_theta"])[-1], "theta (printed)")
    assert_rel(f.theta_next, r["theta_next"], "theta_next (fit$history[[1]]$theta)")
    assert_rel(f.history["theta"], r["history_theta"], "theta history")
    assert_rel(f.history["ilik"], r["history_ilik"], "I-likelihood history")
    if "theta = 0.5" not in r["frailty"]:
        assert_rel(f.history["loglik"], r["history_loglik"], "penalised loglik history")
    assert_rel(f.ilik, r["ilik"], "I-likelihood")
    # the penalty -sum(w)/theta: at theta ~ 0 (nofrail) sum(w) is at rounding level, so compare
    # it on the scale of the loglik it is part of
    assert np.allclose(f.penalty, num(r["penalty"]), rtol=RTOL, atol=RTOL * abs(r["loglik"][1]))
    assert_rel(f.frail, r["frail"], "frail", scale=True)
    assert_rel(f.fvar, r["fvar"], "fvar")
    assert_rel(f.df_frailty, r["frailty_df"], "frailty df")
    assert_rel(f.frailty_chisq, r["frailty_chisq"], "frailty chisq", rtol=1e-7)
    assert_rel(f.frailty_p, r["frailty_p"], "frailty p", rtol=1e-6)
    assert_rel(np.nansum(f.df_columns) + f.df_frailty, r["lr_df"], "LR df")


def test_frailty_extra_is_what_r_prints():
    r = reference()["fits"]["demo_unadjusted"]
    fr = model_result("demo_unadjusted").extras["frailty"].set_index("quantity")["value"]
    assert f"{fr['theta']:.7g}" in r["printed_history"]
    assert f"I-likelihood = {float(fr['i_likelihood']):.1f}" in r["printed_history"]
    assert_rel(float(fr["lr_statistic"]), r["lr_test"], "likelihood-ratio test")
    assert_rel(float(fr["frailty_wald_chisq"]), r["frailty_chisq"], "frailty chisq", 1e-7)
    assert int(fr["outer_iterations"]) == r["iter"][0]
    assert fr["theta_method"].startswith("em")
    hist = model_result("demo_unadjusted").extras["history"]
    assert list(hist.columns) == ["outer", "theta", "loglik", "ilik"]
    summary = model_result("demo_unadjusted").extras["frailty_summary"]
    assert len(summary) == 9  # aggregates only, no per-participant rows
    assert summary.set_index("statistic").loc["mean", "frailty"] == pytest.approx(1.0)


def test_gammacon_closed_form():
    """frailty.gammacon(d, nu) is the closed form
    sum_i [d + nu log nu - (nu + d) log(nu + d) + lgamma(nu + d) - lgamma(nu)]."""
    from scipy.special import gammaln

    d = np.array([0, 1, 1, 2, 5, 0, 3], dtype=float)
    for nu in (0.3, 2.0, 50.0):
        closed = np.sum(
            d + nu * np.log(nu) - (nu + d) * np.log(nu + d) + gammaln(nu + d) - gammaln(nu)
        )
        assert gammacon(d, nu) == pytest.approx(closed, rel=1e-12)


# ------------------------------------------------------------------------------------------------
# The sparse Newton step: derivatives and the block factorisation
# ------------------------------------------------------------------------------------------------


def _problem(stem: str, rhs: str = ADJ, ties: str = "efron"):
    df = read(stem)
    X, _ = design(rhs, df, intercept=False)
    xc = X.to_numpy() - X.to_numpy().mean(axis=0)
    ids, code = np.unique(df["participant_id"].to_numpy(), return_inverse=True)
    prob = _FrailtyProblem(
        xc,
        df["stop"].to_numpy(float),
        df["event"].to_numpy() == 1,
        df["start"].to_numpy(float),
        code.astype(np.int64),
        ids.size,
        ties,
    )
    return prob


@pytest.mark.parametrize(
    "stem,ties", [("demo", "efron"), ("overlap", "efron"), ("demo", "breslow")]
)
def test_score_and_information_are_derivatives(stem, ties):
    """u is the gradient of PL + (1/theta) sum(w - exp(w)); the frailty diagonal, the
    frailty-covariate block and the covariate block of the information are its exact second
    derivatives (R drops only the off-diagonal frailty-frailty terms)."""
    prob = _problem(stem, ties=ties)
    rng = np.random.default_rng(5)
    theta = 0.7
    beta = np.array([-0.5, 0.01, 0.1, 0.05])
    w = rng.normal(0, 0.4, prob.nf)
    w -= np.log(np.mean(np.exp(w)))  # recentred, as evaluate leaves it

    def f(b, ww):
        pl = prob.evaluate(b, ww, theta)[1]
        return pl + np.sum(ww - np.exp(ww)) / theta

    _, _, u_w, u_b, fd, cross, h22, w_out, _ = prob.evaluate(beta, w, theta)
    np.testing.assert_allclose(w_out, w, atol=1e-14)
    h = 1e-5
    for j in range(beta.size):
        e = np.zeros(beta.size)
        e[j] = h
        g = (f(beta + e, w) - f(beta - e, w)) / (2 * h)
        assert g == pytest.approx(u_b[j], rel=1e-6, abs=1e-6)
        gu = (prob.evaluate(beta + e, w, theta)[3] - prob.evaluate(beta - e, w, theta)[3]) / (2 * h)
        np.testing.assert_allclose(-gu, h22[:, j], rtol=1e-5, atol=1e-6)
    for i in rng.choice(prob.nf, 15, replace=False):
        e = np.zeros(prob.nf)
        e[i] = h
        g = (f(beta, w + e) - f(beta, w - e)) / (2 * h)
        assert g == pytest.approx(u_w[i], rel=1e-6, abs=1e-7)
        # derivatives of the score in w_i (no recentring: evaluate at theta = inf-like penalty 0)
        up = _unpenalised_score(prob, beta, w + e)
        um = _unpenalised_score(prob, beta, w - e)
        dw = (up[0] - um[0]) / (2 * h)
        db = (up[1] - um[1]) / (2 * h)
        pen = np.exp(w[i]) / theta
        assert -dw[i] + pen == pytest.approx(fd[i], rel=1e-6)
        np.testing.assert_allclose(-db, cross[:, i], rtol=1e-5, atol=1e-8)


def _unpenalised_score(prob, beta, w):
    """The partial-likelihood score (no penalty, no recentring) at (beta, w)."""
    big = 1e12  # penalty derivatives (exp(c) - 1) / theta vanish; recentring shifts w only
    _, _, u_w, u_b, *_ = prob.evaluate(beta, w, big)
    return u_w, u_b


def test_block_factorisation_solves_the_system():
    """cholesky3 / chsolve3 / chinv3 equal a dense solve of [[diag(fd), C'], [C, H22]]."""
    prob = _problem("demo")
    beta = np.array([-0.9, 0.0, 0.1, 0.1])
    w = np.random.default_rng(1).normal(0, 0.3, prob.nf)
    _, _, u_w, u_b, fd, cross, h22, _, pen2 = prob.evaluate(beta, w, 0.5)
    dense = np.block([[np.diag(fd), cross.T], [cross, h22]])
    ch = _cholesky3(fd, cross, h22, np.finfo(float).eps ** 0.75)
    assert ch.rank == prob.nf + 4
    sw, sb = _chsolve3(ch, u_w, u_b)
    full = np.linalg.solve(dense, np.concatenate([u_w, u_b]))
    np.testing.assert_allclose(np.concatenate([sw, sb]), full, rtol=1e-9, atol=1e-12)
    fdinv, Tc, Linv, dinv = _chinv3(ch)
    inv = np.linalg.inv(dense)
    C = Linv.T @ (dinv[:, None] * Linv)
    np.testing.assert_allclose(C, inv[prob.nf :, prob.nf :], rtol=1e-9)
    adiag = fdinv + np.sum(Tc * Tc * dinv[:, None], axis=0)
    np.testing.assert_allclose(adiag, np.diag(inv)[: prob.nf], rtol=1e-9)
    P = np.diag(np.concatenate([pen2, np.zeros(4)]))
    var2 = (inv @ (dense - P) @ inv)[prob.nf :, prob.nf :]
    B = Tc.T @ (dinv[:, None] * Linv)
    np.testing.assert_allclose(C - B.T @ (pen2[:, None] * B), var2, rtol=1e-8)


# ------------------------------------------------------------------------------------------------
# Known truth, failures, speed
# ------------------------------------------------------------------------------------------------

CONFIG = {
    "arms": {"control": "control", "intervention": "intervention"},
    "exclude_episode_time": True,
    "covariates": {"age": "numeric", "prior_episodes": "numeric", "baseline_pain": "numeric"},
}


def test_simulation_recovers_truth():
    """n = 4000, frailty variance 0.5, rate ratio 0.5.  The simulated process is not at risk
    during episodes, so the intervals exclude episode time (with the episode days counted as at
    risk theta comes out near 0.37 and the rate ratio is attenuated).  Over 8 seeds theta had
    mean 0.494, SD 0.024."""
    params = SimulationParams(n=4000, seed=20261220, frailty_var=0.5, rate_ratio=0.5)
    sim = simulate_cohort(params)
    cp = counting_process(sim["participants"], sim["episodes"], CONFIG)
    res = fit_spec(ModelSpec("frailty", "frailty_cox", ADJ), {"counting_process": cp})
    assert res.converged, res.message
    t = res.table.set_index("term")
    truth = {
        ARM: np.log(params.rate_ratio),
        "age": params.beta_age_per_10y / 10,
        "prior_episodes": params.beta_prior_episode,
        "baseline_pain": params.beta_baseline_pain,
    }
    for term, value in truth.items():
        z = (t.loc[term, "estimate"] - value) / t.loc[term, "std_error"]
        assert abs(z) < 4, f"{term}: z = {z:.2f}"
    theta = float(res.extras["frailty"].set_index("quantity").loc["theta", "value"])
    assert abs(theta - 0.5) < 0.1, theta


def test_no_frailty_is_flagged_at_boundary_with_andersen_gill_estimates():
    df = read("nofrail")
    res = model_result("nofrail_unadjusted")
    assert not res.converged
    assert "boundary" in res.message
    ag = fit_spec(ModelSpec("ag", "andersen_gill"), {"counting_process": df})
    est = res.table["estimate"].iloc[0]
    assert est == pytest.approx(ag.table["estimate"].iloc[0], rel=1e-4)
    fr = res.extras["frailty"].set_index("quantity")["value"]
    assert float(fr["theta"]) < 1e-5
    assert float(fr["theta_lr_p_value"]) == pytest.approx(0.5)  # the I-likelihood rose nowhere


def test_failures_are_results():
    df = read("demo")
    spec = ModelSpec("frailty", "frailty_cox")
    one_arm = df[df["arm"] == "control"]
    res = fit_spec(spec, {"counting_process": one_arm})
    assert not res.converged and "one arm" in res.message
    no_events = df.assign(event=0)
    res = fit_spec(spec, {"counting_process": no_events})
    assert not res.converged and "no events" in res.message
    few = df[df["participant_id"].isin(df["participant_id"].unique()[:4])]
    few = pd.concat([few[few["arm"] == "control"], few[few["arm"] != "control"]])
    res = fit_spec(spec, {"counting_process": few})
    assert not res.converged
    res = fit_spec(ModelSpec("f", "frailty_cox", options={"theta": -1}), {"counting_process": df})
    assert not res.converged and "theta" in res.message
    res = fit_spec(spec, {"counting_process": None})
    assert not res.converged and "skipped" in res.message


def test_constant_covariate_is_singular():
    df = read("demo").assign(const=1.0)
    res = fit_spec(ModelSpec("f", "frailty_cox", "arm + const + age"), {"counting_process": df})
    assert not res.converged and "singular" in res.message
    t = res.table.set_index("term")
    assert np.isnan(t.loc["const", "estimate"]) and np.isnan(t.loc["const", "std_error"])
    assert np.isfinite(t.loc[[ARM, "age"], "std_error"]).all()


def test_inner_loop_running_out_is_reported():
    res = fit_spec(
        ModelSpec("f", "frailty_cox", options={"iter_max": 2}), {"counting_process": read("demo")}
    )
    assert not res.converged
    assert "inner Newton-Raphson" in res.message
    assert np.isfinite(res.table["estimate"]).all()


def test_missing_covariates_drop_rows():
    df = read("demo")
    df.loc[df.index[:5], "age"] = np.nan
    res = fit_spec(ModelSpec("f", "frailty_cox", ADJ), {"counting_process": df})
    assert "5 rows with missing covariates" in res.message
    assert res.converged


def test_demo_size_is_fast():
    df = read("demo")
    spec = ModelSpec("f", "frailty_cox", ADJ)
    fit_spec(spec, {"counting_process": df})  # warm-up (imports)
    t0 = time.perf_counter()
    fit_spec(spec, {"counting_process": df})
    assert time.perf_counter() - t0 < 1.0
