"""Joint gamma-frailty model of episodes and a terminal event (recurstudy.models.joint_frailty).

References used here, each independent of the code under test:

* the closed-form gamma posterior (alpha = 1) and scipy's adaptive quadrature for the frailty
  integrals the quadrature rule computes;
* R's ``coxph(... + strata(type) + frailty(id), ties = "breslow")`` on the episodes stacked with
  one terminal-event row per participant, which is the joint model with alpha = 1
  (tests/fixtures/joint_frailty/, script and data generator committed);
* the project's shared gamma-frailty Cox model (``frailty_cox_fit``, equal to R's
  ``coxph(... + frailty(id))`` to 1e-11) when there are no terminal events: the model must reduce
  to it (same beta at every theta; a profile likelihood differing by a constant, hence the same
  theta);
* finite differences of the profile log-likelihood for the analytic profile score;
* simulation with known truth for the joint model with deaths.

Monte Carlo tolerance: the mean of R replicate estimates must lie within 3 Monte Carlo standard
errors of the truth, the Monte Carlo SE being sqrt(mean(se^2) / R) with se the model-based errors
(that these errors match the replicate SD is what ``benchmarks/bench_joint_frailty.py`` prints).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, optimize, special

from recurstudy.models import get_model
from recurstudy.models.base import ModelSpec, NotEstimable, OptionError, parse_options
from recurstudy.models.frailty import frailty_cox_fit
from recurstudy.models.joint_frailty import (
    JointFrailtyOptions,
    _Problem,
    gamma_posterior,
    joint_frailty_fit,
    terminal_status,
)

FIX = Path(__file__).parent / "fixtures" / "frailty"
ID = "participant_id"


def _load(name: str) -> pd.DataFrame:
    return pd.read_csv(FIX / f"{name}_counting_process.csv")


def _arm(df: pd.DataFrame) -> np.ndarray:
    return (df["arm"] == "intervention").to_numpy(float)[:, None]


def simulate_joint(
    n: int,
    *,
    beta: float,
    gamma: float,
    theta: float,
    alpha: float,
    lam0: float = 0.02,
    mu0: float = 0.002,
    tau: float = 365.0,
    seed: int = 0,
):
    """Episodes as a Poisson process of rate lam0 Z exp(beta x) on [0, min(death, tau)], death
    with hazard mu0 Z^alpha exp(gamma x), Z ~ Gamma(mean 1, variance theta), x = arm (0/1,
    alternating).  Returns the counting-process rows (X, start, stop, event, participant) and
    the per-participant terminal indicator."""
    rng = np.random.default_rng(seed)
    x = (np.arange(n) % 2).astype(float)
    z = rng.gamma(1.0 / theta, theta, n)
    death = rng.exponential(1.0 / (mu0 * z**alpha * np.exp(gamma * x)))
    end = np.minimum(death, tau)
    term = (death <= tau).astype(int)
    k = rng.poisson(lam0 * z * np.exp(beta * x) * end)
    pid = np.repeat(np.arange(n), k + 1)
    ev_pid = np.repeat(np.arange(n), k)
    times = rng.uniform(0.0, 1.0, k.sum()) * end[ev_pid]
    times = times[np.lexsort((times, ev_pid))]
    first = np.cumsum(k + 1) - (k + 1)
    pos = np.arange(pid.size) - np.repeat(first, k + 1)
    is_event = pos < k[pid]
    stop = np.where(is_event, 0.0, end[pid])
    stop[is_event] = times
    start = np.zeros(pid.size)
    start[1:] = stop[:-1]
    start[pos == 0] = 0.0
    return x[pid][:, None], start, stop, is_event.astype(int), pid, term


# ---- the frailty integrals ------------------------------------------------------------------


def test_quadrature_matches_closed_form_at_alpha_one():
    d = np.repeat(np.arange(31), 4).astype(float)
    delta = np.tile([0, 1, 0, 1], 31).astype(float)
    H = np.tile([0.1, 1.0, 3.0, 10.0], 31) * (1 + d / 3)
    M = np.tile([0.05, 0.5, 2.0, 0.01], 31)
    # measured worst relative errors with 64 nodes: 1e-6 for theta <= 2, 3.5e-5 at theta = 4
    for theta, tol in [(0.1, 2e-6), (0.5, 2e-6), (1.0, 2e-6), (2.0, 2e-6), (4.0, 5e-5)]:
        a = gamma_posterior(d, delta, H, M, theta, 1.0)
        b = gamma_posterior(d, delta, H, M, theta, 1.0, quadrature=True)
        for k in ("log_integral", "ez", "eza", "elogz", "ezalogz"):
            x, y = getattr(a, k), getattr(b, k)
            assert np.max(np.abs(x - y) / (1 + np.abs(x))) < tol, (theta, k)


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_quadrature_matches_scipy_quad(alpha):
    d = np.array([0.0, 2.0, 12.0, 1.0])
    delta = np.array([1.0, 0.0, 1.0, 1.0])
    H = np.array([0.4, 2.0, 9.0, 1.5])
    M = np.array([0.3, 0.8, 0.2, 2.5])
    theta = 0.7
    post = gamma_posterior(d, delta, H, M, theta, alpha)
    nu = 1.0 / theta
    for i in range(d.size):

        def dens(z, f=lambda z: 1.0, i=i):
            logg = (nu - 1) * np.log(z) - nu * z + nu * np.log(nu) - special.gammaln(nu)
            lik = (d[i] + alpha * delta[i]) * np.log(z) - z * H[i] - z**alpha * M[i]
            return np.exp(logg + lik) * f(z)

        def quad(f):
            return integrate.quad(dens, 0, np.inf, args=(f,), epsabs=0, epsrel=1e-12, limit=500)[0]

        # 64 nodes: measured errors up to 2e-8 (log integral) and 2e-7 (moments)
        total = quad(lambda z: 1.0)
        assert post.log_integral[i] == pytest.approx(np.log(total), abs=1e-7)
        assert post.ez[i] == pytest.approx(quad(lambda z: z) / total, rel=1e-6)
        assert post.eza[i] == pytest.approx(quad(lambda z: z**alpha) / total, rel=1e-6)
        assert post.elogz[i] == pytest.approx(quad(np.log) / total, abs=1e-6)
        want = quad(lambda z: z**alpha * np.log(z)) / total
        assert post.ezalogz[i] == pytest.approx(want, abs=1e-6)


# ---- reduction to the shared gamma-frailty model ----------------------------------------------


@pytest.mark.parametrize("name", ["demo", "sim"])
def test_reduces_to_shared_frailty_at_fixed_theta(name):
    df = _load(name)
    X, G = _arm(df), df[ID].nunique()
    diffs = []
    for theta in (0.3, 0.5, 1.0):
        jf = joint_frailty_fit(
            X, df["start"], df["stop"], df["event"], df[ID], np.zeros(G), names=["arm"], theta=theta
        )
        assert not jf.terminal and jf.converged
        cox = frailty_cox_fit(
            X, df["start"], df["stop"], df["event"], df[ID].to_numpy(), ties="breslow",
            theta=theta, eps=1e-13,
        )  # fmt: skip
        # same beta: optimisation tolerance of both fits (measured differences ~1e-7)
        assert jf.beta[0] == pytest.approx(cox.coef[0], abs=1e-6)
        diffs.append(jf.loglik - cox.ilik)
    # the profile marginal likelihood is R's I-likelihood plus a constant (not depending on
    # theta): the two maximise at the same theta.  The constant is sum_k d_k log d_k - D over
    # the distinct event times (d_k tied events; D events in all): the full-likelihood Breslow
    # jumps d_k / S_k against the partial likelihood's 1 / S_k per event
    d = df.loc[df["event"] == 1].groupby("stop").size().to_numpy(float)
    assert diffs == pytest.approx([float(np.sum(d * np.log(d)) - d.sum())] * 3, abs=1e-7)


def test_reduces_to_shared_frailty_theta_estimated():
    df = _load("demo")
    X, G = _arm(df), df[ID].nunique()
    jf = joint_frailty_fit(
        X, df["start"], df["stop"], df["event"], df[ID], np.zeros(G), names=["arm"]
    )
    assert jf.converged and np.isnan(jf.alpha) and jf.gamma.size == 0

    def neg_ilik(th):
        fit = frailty_cox_fit(
            X, df["start"], df["stop"], df["event"], df[ID].to_numpy(), ties="breslow",
            theta=th, eps=1e-13,
        )  # fmt: skip
        return -fit.ilik

    best = optimize.minimize_scalar(neg_ilik, bounds=(0.3, 0.8), method="bounded",
                                    options={"xatol": 1e-7})  # fmt: skip
    # theta maximising the I-likelihood of the project's coxph(... + frailty(id)), Breslow ties
    assert jf.theta == pytest.approx(best.x, abs=2e-5)
    cox = frailty_cox_fit(
        X, df["start"], df["stop"], df["event"], df[ID].to_numpy(), ties="breslow",
        theta=jf.theta, eps=1e-13,
    )  # fmt: skip
    assert jf.beta[0] == pytest.approx(cox.coef[0], abs=1e-6)
    # R's own theta search (frailty.controlgam, tolerance 1e-5 on the I-likelihood) stopped at
    # 0.4946; every theta it tried has an I-likelihood no higher than ours
    ref = json.loads((FIX / "frailty_reference.json").read_text())["fits"]["demo_breslow"]
    assert -neg_ilik(jf.theta) >= max(ref["history_ilik"]) - 1e-9
    assert jf.beta[0] == pytest.approx(ref["coef"], abs=2e-3)


def test_no_detectable_frailty_is_flagged_at_the_boundary():
    # the nofrail fixture: R's theta search goes to 5e-7; the likelihood is largest at theta -> 0,
    # where the model is the Andersen-Gill fit (Breslow ties)
    from recurstudy.models.coxph_engine import coxph_fit

    df = _load("nofrail")
    X, G = _arm(df), df[ID].nunique()
    jf = joint_frailty_fit(
        X, df["start"], df["stop"], df["event"], df[ID], np.zeros(G), names=["arm"]
    )
    assert not jf.converged and "no detectable frailty" in jf.message
    ag = coxph_fit(X, df["stop"], df["event"], start=df["start"], ties="breslow")
    assert jf.beta[0] == pytest.approx(float(ag.coef[0]), abs=1e-5)
    assert jf.se_beta[0] == pytest.approx(float(np.sqrt(ag.var[0, 0])), rel=1e-3)


def _stacked():
    d = pd.read_csv(Path(__file__).parent / "fixtures" / "joint_frailty" / "joint_stacked.csv")
    rec = d[d["type"] == "recurrent"]
    term = d[d["type"] == "terminal"].sort_values("id")
    return rec, term


def test_alpha_one_matches_r_stratified_frailty_model():
    # With alpha = 1 the joint model is R's coxph(Surv(start, stop, status) ~ x_rec + x_term +
    # strata(type) + frailty(id), ties = "breslow") (tests/fixtures/joint_frailty/*.R): same
    # beta and gamma at each theta, and our marginal log-likelihood equals R's I-likelihood
    # plus sum_k d_k log d_k - D over both processes' event times (= -D without ties).
    ref = json.loads((FIX.parent / "joint_frailty" / "joint_reference.json").read_text())
    rec, term = _stacked()
    X = rec[["arm"]].to_numpy(float)
    args = (X, rec["start"], rec["stop"], rec["status"], rec["id"], term["status"].to_numpy())
    n_events = ref["n_recurrent_events"] + ref["n_terminal_events"]
    for fx in ref["fixed"]:
        fit = joint_frailty_fit(*args, names=["arm"], alpha=1.0, theta=fx["theta"])
        assert fit.converged and fit.n_terminal == ref["n_terminal_events"]
        # measured differences 4.5e-7: R's inner loop stops where our profile score (checked by
        # finite differences) is still -3.9e-5, i.e. 4e-7 away in beta
        assert fit.beta[0] == pytest.approx(fx["coef"][0], abs=1e-6)
        assert fit.gamma[0] == pytest.approx(fx["coef"][1], abs=1e-6)
        assert fit.loglik - fx["ilik"] == pytest.approx(-n_events, abs=1e-7)
    est = joint_frailty_fit(*args, names=["arm"], alpha=1.0)
    # R's theta search (tolerance 1e-5 on the I-likelihood) stopped at 0.5402; ours maximises
    # the same function: no theta R tried has a higher I-likelihood
    assert est.loglik + n_events >= max(ref["estimated"]["history_ilik"]) - 1e-9
    assert est.theta == pytest.approx(ref["estimated"]["theta"], abs=5e-3)
    assert est.beta[0] == pytest.approx(ref["estimated"]["coef"][0], abs=1e-3)
    assert est.gamma[0] == pytest.approx(ref["estimated"]["coef"][1], abs=1e-3)


# ---- the profile score ------------------------------------------------------------------------


def test_profile_score_matches_finite_differences():
    X, start, stop, event, pid, term = simulate_joint(
        400, beta=-0.4, gamma=0.3, theta=0.7, alpha=1.3, seed=5
    )
    from recurstudy.models.risksets import strata_codes

    gcode, G = strata_codes(pid)
    first = np.unique(gcode, return_index=True)[1]
    entry = np.zeros(G)
    tend = pd.Series(stop).groupby(gcode).max().to_numpy()
    prob = _Problem(X, start, stop, event.astype(bool), gcode, G, X[first], entry, tend,
                    term.astype(float), 64, 1e-12, 20000)  # fmt: skip
    point = np.array([-0.3, 0.2, 0.6, 1.1])  # beta, gamma, theta, alpha: not the optimum

    def ll(x):
        return prob.profile(np.array([x[0]]), np.array([x[1]]), x[2], x[3], reset=True)[0]

    out = prob.profile(np.array([point[0]]), np.array([point[1]]), point[2], point[3], reset=True)
    score = np.array([out[1][0], out[2][0], out[3], out[4]])
    for j in range(4):
        h = 1e-5
        e = np.zeros(4)
        e[j] = h
        fd = (ll(point + e) - ll(point - e)) / (2 * h)
        assert score[j] == pytest.approx(fd, rel=1e-5, abs=1e-4), j


# ---- simulation with known truth --------------------------------------------------------------


def _recovery(truth: dict, *, n: int, reps: int, alpha_fixed: bool):
    keys = ["beta", "gamma", "theta"] + ([] if alpha_fixed else ["alpha"])
    est, var = {k: [] for k in keys}, {k: [] for k in keys}
    for seed in range(reps):
        X, start, stop, event, pid, term = simulate_joint(n, **truth, seed=100 + seed)
        fit = joint_frailty_fit(X, start, stop, event, pid, term, names=["arm"],
                                alpha=1.0 if alpha_fixed else None)  # fmt: skip
        assert fit.converged, fit.message
        vals = {"beta": (fit.beta[0], fit.se_beta[0]), "gamma": (fit.gamma[0], fit.se_gamma[0]),
                "theta": (fit.theta, fit.se_theta), "alpha": (fit.alpha, fit.se_alpha)}  # fmt: skip
        for k in keys:
            est[k].append(vals[k][0])
            var[k].append(vals[k][1] ** 2)
    for k in keys:
        mc_se = np.sqrt(np.mean(var[k]) / reps)
        bias = np.mean(est[k]) - truth[k]
        assert abs(bias) < 3 * mc_se, (k, np.mean(est[k]), truth[k], mc_se)


def test_recovers_truth_alpha_fixed():
    truth = {"beta": -0.5, "gamma": 0.4, "theta": 0.6, "alpha": 1.0}
    _recovery(truth, n=2000, reps=4, alpha_fixed=True)


def test_recovers_truth_alpha_estimated():
    truth = {"beta": -0.5, "gamma": 0.4, "theta": 0.6, "alpha": 1.5}
    _recovery(truth, n=1000, reps=2, alpha_fixed=False)


def test_alpha_zero_gives_independent_processes():
    # alpha = 0: death does not depend on the frailty; the terminal part is then a Cox model
    # of death on arm with Breslow ties (R: coxph(Surv(tend, death) ~ arm, ties = "breslow"))
    from recurstudy.models.coxph_engine import coxph_fit

    X, start, stop, event, pid, term = simulate_joint(
        800, beta=-0.5, gamma=0.4, theta=0.6, alpha=0.0, seed=3
    )
    fit = joint_frailty_fit(X, start, stop, event, pid, term, names=["arm"], alpha=0.0)
    tend = pd.Series(stop).groupby(pid).max().to_numpy()
    xt = X[np.unique(pid, return_index=True)[1]]
    cox = coxph_fit(xt, tend, term, ties="breslow")
    assert fit.gamma[0] == pytest.approx(float(cox.coef[0]), abs=1e-6)
    assert fit.se_gamma[0] == pytest.approx(float(np.sqrt(cox.var[0, 0])), rel=1e-4)


# ---- the registered model ---------------------------------------------------------------------


def _with_terminal(df: pd.DataFrame, deaths: set) -> pd.DataFrame:
    """derive's terminal column: 1 on the last interval of each participant who died."""
    last = ~df[ID].duplicated(keep="last")
    return df.assign(terminal=(last & df[ID].isin(deaths)).astype(int))


def test_model_on_demo_without_deaths_is_the_shared_frailty_model():
    df = _load("demo")
    model = get_model("joint_frailty")
    spec = ModelSpec("jf", "joint_frailty", "arm", {})
    res = model.fit(spec, counting_process=_with_terminal(df, set()))
    assert list(res.table["term"]) == ["arm[T.intervention]"]
    assert res.converged
    assert "reduces to the shared gamma-frailty model" in res.message
    direct = joint_frailty_fit(
        _arm(df), df["start"], df["stop"], df["event"], df[ID], np.zeros(df[ID].nunique())
    )
    assert res.table["estimate"].iloc[0] == pytest.approx(direct.beta[0], abs=1e-10)
    extras = res.extras["joint_frailty"].set_index("quantity")
    assert extras.loc["theta", "value"] == pytest.approx(direct.theta, abs=1e-10)
    assert np.isnan(extras.loc["alpha", "value"])
    assert dict(model.describe(spec).strategies)["terminal event"].startswith("while alive")
    desc = model.describe(spec)
    assert desc.reference.startswith("Liu, Wolfe and Huang (2004)")
    assert "frailtyPenal" in desc.r_call and "recurrentAG = TRUE" in desc.r_call


def test_model_with_deaths_reports_terminal_terms():
    X, start, stop, event, pid, term = simulate_joint(
        600, beta=-0.5, gamma=0.4, theta=0.6, alpha=1.0, seed=9
    )
    ids = np.array([f"P{i:04d}" for i in range(600)])
    df = pd.DataFrame({ID: ids[pid], "arm": np.where(X[:, 0] == 1, "intervention", "control"),
                       "start": start, "stop": stop, "event": event})  # fmt: skip
    spec = ModelSpec("jf", "joint_frailty", "arm", {"alpha": 1.0})
    res = get_model("joint_frailty").fit(
        spec, counting_process=_with_terminal(df, set(ids[term == 1]))
    )
    assert list(res.table["term"]) == ["arm[T.intervention]", "terminal: arm[T.intervention]"]
    assert res.table["std_error"].notna().all() and res.converged
    assert f"terminal events: {int(term.sum())}" in res.message
    direct = joint_frailty_fit(X, start, stop, event, pid, term, names=["arm"], alpha=1.0)
    assert res.table["estimate"].iloc[1] == pytest.approx(direct.gamma[0], abs=1e-8)
    assert "the counting-process data's 'terminal' column" in res.message
    # without derive's terminal column: no terminal events (said so), the shared frailty model
    res2 = get_model("joint_frailty").fit(spec, counting_process=df)
    assert list(res2.table["term"]) == ["arm[T.intervention]"]
    assert "no 'terminal' column" in res2.message
    assert "fixed at 1" in get_model("joint_frailty").describe(spec).estimand


def test_terminal_status_sources():
    df = pd.DataFrame({ID: ["a", "a", "b", "c"], "event": [1, 0, 0, 0]})
    parts = pd.DataFrame({ID: ["a", "b", "c"], "end_reason": ["death", "withdrawn", None]})
    flag, src = terminal_status(df, parts)
    assert flag.to_dict() == {"a": 1, "b": 0, "c": 0} and "end_reason" in src
    flag, _ = terminal_status(df, parts, ["death", "withdrawn"])
    assert flag.to_dict() == {"a": 1, "b": 1, "c": 0}
    flag, src = terminal_status(df, parts.drop(columns="end_reason"))
    assert flag.sum() == 0 and src.startswith("none")
    with pytest.raises(NotEstimable, match="must be 0 or 1"):
        terminal_status(df.assign(terminal=[0, 2, 0, 0]), parts)


def test_not_estimable():
    df = _load("demo")
    model = get_model("joint_frailty")
    spec = ModelSpec("jf", "joint_frailty", "arm", {})
    with pytest.raises(NotEstimable, match="no episodes"):
        model.fit(spec, counting_process=_with_terminal(df.assign(event=0), set()))
    with pytest.raises(NotEstimable, match="only one arm"):
        one = df[df["arm"] == "control"]
        model.fit(spec, counting_process=_with_terminal(one, set()))
    # deaths only in the control arm: the terminal hazard ratio is infinite
    ctrl = set(df.loc[df["arm"] == "control", ID].unique()[:5])
    with pytest.raises(NotEstimable, match="terminal events occur only where.*monotone"):
        model.fit(spec, counting_process=_with_terminal(df, ctrl))


def test_options():
    assert parse_options(JointFrailtyOptions, {}, "jf").alpha == "estimate"
    assert parse_options(JointFrailtyOptions, {"alpha": 1}, "jf").alpha == 1
    with pytest.raises(OptionError, match="unknown option 'terminal_events'"):
        parse_options(JointFrailtyOptions, {"terminal_events": ["death"]}, "jf")
    with pytest.raises(OptionError, match="alpha"):
        parse_options(JointFrailtyOptions, {"alpha": "fixed"}, "jf")
    with pytest.raises(OptionError, match="nodes"):
        parse_options(JointFrailtyOptions, {"nodes": 2}, "jf")
