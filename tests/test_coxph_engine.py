"""Tests for recurstudy.models.coxph_engine against R's survival::coxph and by hand.

The R reference fits live in tests/fixtures/cox/cox_reference.json (made by
make_cox_reference.R from the CSVs written by make_cox_data.py; CI has no R).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recurstudy.models.coxph_engine import CoxFit, coxph_fit

FIX = Path(__file__).parent / "fixtures" / "cox"
REF = json.loads((FIX / "cox_reference.json").read_text())
RTOL = 1e-6  # stricter than the project standard (1e-5): the engine replicates R's algorithm

# How each R fit maps onto coxph_fit arguments (column names in the fit's CSV).
SPECS: dict[str, dict] = {
    "ag_efron": dict(X=["arm", "x"], stop="stop", start="start", event="event", cluster="id"),
    "ag_breslow": dict(
        X=["arm", "x"], stop="stop", start="start", event="event", cluster="id", ties="breslow"
    ),
    "ag_efron_naive": dict(X=["arm", "x"], stop="stop", start="start", event="event"),
    "pwp_total_efron": dict(
        X=["arm", "x"], stop="stop", start="start", event="event", cluster="id", strata="enum"
    ),
    "pwp_total_breslow": dict(
        X=["arm", "x"],
        stop="stop",
        start="start",
        event="event",
        cluster="id",
        strata="enum",
        ties="breslow",
    ),
    "pwp_gap_efron": dict(X=["arm", "x"], stop="gap", event="event", cluster="id", strata="enum"),
    "first_efron": dict(X=["arm", "x", "age"], stop="time", event="status"),
    "first_breslow": dict(X=["arm", "x", "age"], stop="time", event="status", ties="breslow"),
    "first_efron_robust": dict(X=["arm", "x", "age"], stop="time", event="status", robust=True),
    "edge_efron": dict(
        X=["x", "z"], stop="stop", start="start", event="event", cluster="id", strata="stratum"
    ),
    "edge_breslow": dict(
        X=["x", "z"],
        stop="stop",
        start="start",
        event="event",
        cluster="id",
        strata="stratum",
        ties="breslow",
    ),
    "tiny_efron": dict(X=["x"], stop="time", event="status"),
    "tiny_breslow": dict(X=["x"], stop="time", event="status", ties="breslow"),
    "sep_cox": dict(X=["x", "z"], stop="time", event="status"),
    "sep_ag": dict(X=["x", "z"], stop="time", start="start", event="status"),
}


def _fit_spec(key: str) -> tuple[CoxFit, dict]:
    ref = REF["fits"][key]
    spec = SPECS[key]
    df = pd.read_csv(FIX / ref["data"])
    kw = dict(X=df[spec["X"]], stop=df[spec["stop"]], event=df[spec["event"]], residuals=True)
    for arg in ("start", "cluster", "strata"):
        if arg in spec:
            kw[arg] = df[spec[arg]]
    for arg in ("ties", "robust"):
        if arg in spec:
            kw[arg] = spec[arg]
    return coxph_fit(**kw), ref


def _assert_rel(got, want, what: str, rtol: float = RTOL) -> None:
    got = np.asarray(got, dtype=float)
    want = np.asarray(want, dtype=float).reshape(got.shape)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=0, err_msg=what)


def test_reference_covers_all_specs():
    assert set(REF["fits"]) == set(SPECS)
    assert REF["survival_version"].startswith("3.")


@pytest.mark.parametrize("key", sorted(SPECS))
def test_matches_r(key):
    fit, ref = _fit_spec(key)
    assert fit.names == ref["names"]
    assert fit.n == ref["n"]
    assert fit.n_events == ref["nevent"]
    assert fit.iterations == ref["iter"]
    _assert_rel(fit.coef, ref["coef"], "coef")
    # For the separation fits the information of the diverging coefficient is ~exp(-22), the
    # difference of two nearly equal risk-set moments: R's value carries only ~6 digits there.
    vtol = 1e-4 if key.startswith("sep") else RTOL
    _assert_rel(fit.se, np.sqrt(np.diag(ref["var"])), "naive se", vtol)
    if key != "sep_cox":
        # R quirk: when coxfit6 (right-censored data) runs out of iterations it recomputes the
        # information at the last good beta and calls chinv2 without a fresh Cholesky, so its
        # var is diag(1 / diag(I)); we return the proper inverse (diagonals agree here).
        _assert_rel(fit.var, ref["var"], "naive var", vtol)
    _assert_rel(fit.loglik, ref["loglik"], "loglik")
    _assert_rel(fit.score_test, ref["score"], "score test")
    if key != "sep_cox":
        _assert_rel(fit.wald_test, ref["wald"], "wald test", vtol)
    if ref["robust_var"] is not None:
        assert fit.robust_var is not None
        _assert_rel(fit.robust_se, np.sqrt(np.diag(ref["robust_var"])), "robust se")
        _assert_rel(fit.robust_var, ref["robust_var"], "robust var")
        _assert_rel(fit.robust_score_test, ref["rscore"], "robust score test")
    else:
        assert fit.robust_var is None
    if "score_resid" in ref:
        want = np.asarray(ref["score_resid"], dtype=float).reshape(fit.score_residuals.shape)
        scale = np.abs(want).max()
        np.testing.assert_allclose(fit.score_residuals, want, rtol=0, atol=1e-9 * scale)
    if key.startswith("sep"):
        assert not fit.converged
        assert "did not converge" in fit.message
        assert "infinite" in fit.message and "x" in fit.message
    else:
        assert fit.converged and fit.message == ""


def test_wald_uses_robust_variance_like_r():
    fit, _ = _fit_spec("ag_efron")
    b = fit.coef
    assert fit.wald_test == pytest.approx(float(b @ np.linalg.solve(fit.robust_var, b)), rel=1e-12)
    naive = float(b @ np.linalg.solve(fit.var, b))
    assert abs(fit.wald_test - naive) > 1.0


# ------------------------------------------------------------------------------------------
# Hand calculation: times 1, 2, 2, 3; status 1, 1, 1, 0; x 1, 0, 1, 0.
# beta = 0:  t=1: risk set {1,2,3,4}, mean x 1/2, var 1/4.
#            t=2: risk set {2,3,4} (x 0, 1, 0), tied events rows 2 and 3 (x 0 and 1).
#   Efron:   denominators 3 and 3 - (1 + 1)/2 = 2; means 1/3 and (1 - 1/2)/2 = 1/4;
#            second moments 1/3 and (1 - 1/2)/2 = 1/4.
#            loglik = -log 4 - log 3 - log 2;  U = 1/2 + (1 - 1/3 - 1/4) = 11/12;
#            I = 1/4 + (1/3 - 1/9) + (1/4 - 1/16) = 95/144;  score test = U^2 / I = 121/95.
#   Breslow: loglik = -log 4 - 2 log 3;  U = 1/2 + (1 - 2/3) = 5/6;
#            I = 1/4 + 2 (1/3 - 1/9) = 25/36;  score test = 1.
# ------------------------------------------------------------------------------------------
TINY = dict(
    X=np.array([[1.0], [0.0], [1.0], [0.0]]),
    stop=np.array([1.0, 2.0, 2.0, 3.0]),
    event=np.array([1, 1, 1, 0]),
)


def _tiny_loglik(b: float, ties: str) -> float:
    e = math.exp(b)
    first = b - math.log(2 * e + 2)  # t=1: row 1 (x=1) fails; risk set x = 1, 0, 1, 0
    if ties == "efron":
        # t=2: rows 2 (x=0) and 3 (x=1) fail; risk set x = 0, 1, 0 -> sum e + 2
        second = b - math.log(e + 2) - math.log(e + 2 - (1 + e) / 2)
    else:
        second = b - 2 * math.log(e + 2)
    return first + second


@pytest.mark.parametrize(
    "ties, ll0, u0, i0, sc",
    [
        ("efron", -math.log(24), 11 / 12, 95 / 144, 121 / 95),
        ("breslow", -math.log(36), 5 / 6, 25 / 36, 1.0),
    ],
)
def test_tiny_by_hand(ties, ll0, u0, i0, sc):
    at0 = coxph_fit(**TINY, ties=ties, max_iter=0)
    assert at0.loglik[0] == pytest.approx(ll0, rel=1e-13)
    assert at0.u[0] == pytest.approx(u0, rel=1e-13)
    assert at0.var[0, 0] == pytest.approx(1 / i0, rel=1e-13)
    assert at0.score_test == pytest.approx(sc, rel=1e-13)
    assert at0.coef[0] == 0.0
    assert not at0.converged and "max_iter = 0" in at0.message

    fit = coxph_fit(**TINY, ties=ties)
    b = fit.coef[0]
    assert fit.converged
    assert fit.loglik[1] == pytest.approx(_tiny_loglik(b, ties), rel=1e-13)
    h = 1e-4  # the fitted beta maximises the hand-written partial likelihood
    d1 = (_tiny_loglik(b + h, ties) - _tiny_loglik(b - h, ties)) / (2 * h)
    d2 = (_tiny_loglik(b + h, ties) - 2 * _tiny_loglik(b, ties) + _tiny_loglik(b - h, ties)) / h**2
    assert abs(d1) < 1e-6
    assert fit.var[0, 0] == pytest.approx(-1 / d2, rel=1e-5)


def test_lifelines_cross_check_right_censored():
    lifelines = pytest.importorskip("lifelines")
    df = pd.read_csv(FIX / "first_event.csv")
    cols = ["arm", "x", "age"]
    fit = coxph_fit(df[cols], df["time"], df["status"])
    cph = lifelines.CoxPHFitter().fit(df[cols + ["time", "status"]], "time", "status")
    np.testing.assert_allclose(fit.coef, cph.params_[cols].to_numpy(), rtol=1e-5)
    np.testing.assert_allclose(fit.se, cph.standard_errors_[cols].to_numpy(), rtol=1e-5)
    assert fit.loglik[1] == pytest.approx(cph.log_likelihood_, rel=1e-8)


def _simulate_ag(n_sub: int, beta, seed: int):
    """Recurrent events: Poisson process with gamma frailty (var 0.5), continuous times."""
    rng = np.random.default_rng(seed)
    arm = rng.integers(0, 2, n_sub).astype(float)
    x = rng.normal(size=n_sub)
    frail = rng.gamma(2.0, 0.5, n_sub)
    follow = rng.uniform(0.5, 3.0, n_sub)
    mu = 1.5 * frail * np.exp(beta[0] * arm + beta[1] * x) * follow
    n_ev = rng.poisson(mu)
    sub = np.repeat(np.arange(n_sub), n_ev)
    t = rng.random(sub.size) * follow[sub]
    all_sub = np.concatenate([sub, np.arange(n_sub)])
    all_t = np.concatenate([t, follow])
    all_ev = np.concatenate([np.ones(sub.size, int), np.zeros(n_sub, int)])
    o = np.lexsort((all_t, all_sub))
    sub, stop, event = all_sub[o], all_t[o], all_ev[o]
    start = np.r_[0.0, stop[:-1]]
    start[np.r_[True, sub[1:] != sub[:-1]]] = 0.0
    return np.column_stack([arm[sub], x[sub]]), start, stop, event, sub


def test_simulation_recovers_truth():
    truth = np.array([-0.4, 0.3])
    X, start, stop, event, sub = _simulate_ag(40_000, truth, seed=7)
    assert stop.size > 100_000
    fit = coxph_fit(X, stop, event, start=start, cluster=sub)
    assert fit.converged
    z = (fit.coef - truth) / fit.robust_se
    assert np.all(np.abs(z) < 4), z
    # frailty: the robust SE must exceed the naive one
    assert np.all(fit.robust_se > fit.se)


def test_row_order_does_not_matter():
    df = pd.read_csv(FIX / "recurrent.csv")
    perm = np.random.default_rng(3).permutation(len(df))
    a = coxph_fit(df[["arm", "x"]], df["stop"], df["event"], start=df["start"], cluster=df["id"])
    d2 = df.iloc[perm]
    b = coxph_fit(d2[["arm", "x"]], d2["stop"], d2["event"], start=d2["start"], cluster=d2["id"])
    np.testing.assert_allclose(a.coef, b.coef, rtol=1e-12)
    np.testing.assert_allclose(a.robust_var, b.robust_var, rtol=1e-10)
    np.testing.assert_allclose(a.score_residuals[perm], b.score_residuals, atol=1e-10)


def test_robust_true_is_one_cluster_per_row():
    df = pd.read_csv(FIX / "first_event.csv")
    a = coxph_fit(df[["arm", "x"]], df["time"], df["status"], robust=True)
    b = coxph_fit(df[["arm", "x"]], df["time"], df["status"], cluster=np.arange(len(df)))
    np.testing.assert_allclose(a.robust_var, b.robust_var, rtol=1e-14)
    assert coxph_fit(df[["arm", "x"]], df["time"], df["status"]).robust_var is None


def test_right_censored_equals_counting_process_from_minus_inf():
    df = pd.read_csv(FIX / "first_event.csv")
    a = coxph_fit(df[["arm", "x"]], df["time"], df["status"], robust=True)
    b = coxph_fit(
        df[["arm", "x"]], df["time"], df["status"], start=np.full(len(df), -1.0), robust=True
    )
    np.testing.assert_allclose(a.coef, b.coef, rtol=1e-10)
    np.testing.assert_allclose(a.robust_var, b.robust_var, rtol=1e-10)


# ------------------------------------------------------------------------------------------
# Failure cases
# ------------------------------------------------------------------------------------------


def test_no_events():
    fit = coxph_fit(TINY["X"], TINY["stop"], np.zeros(4, int), cluster=[1, 1, 2, 2])
    assert not fit.converged
    assert "no events" in fit.message
    assert np.all(np.isnan(fit.coef))


def test_empty_data():
    fit = coxph_fit(np.zeros((0, 2)), np.zeros(0), np.zeros(0))
    assert not fit.converged and fit.n == 0
    assert "no observations" in fit.message


def test_separation_gives_infinite_coefficient_message():
    # x = 1 for every event; fit with counting-process input and a cluster as well
    rng = np.random.default_rng(0)
    n = 60
    x = np.repeat([1.0, 0.0], n // 2)
    z = rng.normal(size=n)
    stop = np.arange(1.0, n + 1)
    event = (x == 1).astype(int)
    for start in (None, np.zeros(n)):
        fit = coxph_fit(np.c_[x, z], stop, event, start=start, cluster=np.arange(n) // 2)
        assert "infinite" in fit.message and "x1" in fit.message
        assert "x2" not in fit.message.split("infinite")[-1]
        assert fit.coef[0] > 10


def test_constant_column():
    X = np.c_[TINY["X"], np.ones(4)]
    fit = coxph_fit(X, TINY["stop"], TINY["event"], names=["x", "const"])
    assert not fit.converged
    assert "singular" in fit.message and "const" in fit.message
    assert np.isnan(fit.coef[1]) and np.isfinite(fit.coef[0])
    # the remaining coefficient is the one-covariate fit
    assert fit.coef[0] == pytest.approx(coxph_fit(**TINY).coef[0], rel=1e-10)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(stop=[1.0, 2.0, 3.0]), "stop has length 3"),
        (dict(event=[1, 0]), "event has length 2"),
        (dict(start=[0.0, 0.0, 0.0]), "start has length 3"),
        (dict(cluster=[1, 2]), "cluster has length 2"),
        (dict(strata=[1, 2, 3, 4, 5]), "strata has length 5"),
        (dict(start=[0.0, 0.0, 2.0, 0.0]), "stop <= start"),
        (dict(stop=[1.0, np.nan, 2.0, 3.0]), "stop contains NaN"),
        (dict(X=np.array([[1.0], [np.nan], [1.0], [0.0]])), "X contains NaN"),
        (dict(event=[1, 2, 0, 1]), "event must contain only 0/1"),
        (dict(ties="exact"), "ties must be"),
        (dict(init=[0.0, 1.0]), "init has length 2"),
    ],
)
def test_malformed_input_raises(kwargs, match):
    args = dict(TINY)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        coxph_fit(**args)
