"""Tests for recurstudy.models.risksets on its own, and for case weights and offsets in the Cox
engine against R.

* By hand: a 7-row data set with tied events, an entry and an exit at an event time, two strata
  and case weights; every risk-set sum, Efron and Breslow term, hazard and residual at beta = 0
  is written out below as a fraction.
* Properties: integer weights equal duplicated rows (Breslow; Efron when the weighted rows are
  not events), an offset equal to x * beta gives the fixed coefficient's likelihood, weighted
  residual sums equal the score, row order does not matter.
* R: ``coxph`` with case weights and offsets (tests/fixtures/risksets/weighted_reference.json,
  made by make_weighted_reference.R, R 4.2.2 / survival 3.5-3).  Measured maximum relative
  differences: 2e-14 coefficients, 6e-14 variances, 9e-14 robust variances, 4e-15 logliks, 7e-14
  score tests, 4e-14 Wald tests; score residuals 1.4e-14, martingale and Schoenfeld residuals
  4e-15 (relative to the largest).  Tolerance 1e-10.
"""

from __future__ import annotations

import json
from fractions import Fraction as F
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recurstudy.models.coxph_engine import coxph_fit
from recurstudy.models.risksets import PartialLikelihood, RiskSets, strata_codes

FIX = Path(__file__).parent / "fixtures"
REF = json.loads((FIX / "risksets" / "weighted_reference.json").read_text())
RTOL = 1e-10

# ------------------------------------------------------------------------------------------------
# Hand calculation.  Stratum 0: rows 0-4, stratum 1: rows 5-6.
#   row  start stop event  x   w
#    0     0    2    1     1   1      tied events at t = 2 (rows 0, 1)
#    1     0    2    1     0   2
#    2     2    5    0     1   1      enters at t = 2: not at risk at 2
#    3     1    3    1     2   1/2    event at t = 3
#    4     0    2    0     3   1      censored at t = 2: at risk at 2
#    5     0    2    1     1   1      stratum 1: its own event group at t = 2
#    6     1    4    0     0   3
# Groups (stratum, time): g0 = (0, 2) risk set {0, 1, 3, 4}; g1 = (0, 3) {2, 3}; g2 = (1, 2)
# {5, 6}.  At beta = 0 (r = 1), weighted sums S0 = sum w, S1 = sum w x, S2 = sum w x^2:
#   g0: S = 9/2, 5, 12;  events D = 3, 1, 1 (d = 2, event weight 3)
#   g1: S = 3/2, 2, 3;   D = 1/2, 1, 2    (d = 1, event weight 1/2)
#   g2: S = 4, 1, 1;     D = 1, 1, 1      (d = 1, event weight 1)
# Efron, g0: two terms of weight 3/2, denominators 9/2 and 9/2 - 3/2 = 3, means 10/9 and
#   (5 - 1/2)/3 = 3/2.
#   loglik = -3/2 log(9/2) - 3/2 log 3 - 1/2 log(3/2) - log 4
#   U = (1 - 3/2 * 10/9 - 3/2 * 3/2) + (1/2 * 2 - 1/2 * 4/3) + (1 - 1/4) = -35/12 + 1/3 + 3/4
#     = -11/6
#   I = 3/2 (8/3 - 100/81) + 3/2 ((12 - 1/2)/3 - 9/4) + 1/2 (2 - 16/9) + (1/4 - 1/16)
#     = 58/27 + 19/8 + 1/9 + 3/16
#   hazard jumps a0 = 3/2 (2/9 + 1/3) = 5/6, 1/3, 1/4; Efron share removed from the tied events
#   a1 = 3/2 * 1/2 / 3 = 1/4 (g0).
#   expected counts: rows 0, 1: 5/6 - 1/4 = 7/12; row 2: 1/3; row 3: 5/6 + 1/3 = 7/6;
#   row 4: 5/6; row 5: 1/4; row 6: 1/4.
#   Schoenfeld: g0 mean (10/9 + 3/2) / 2 = 47/36, so rows 0, 1: -11/36, -47/36; row 3:
#   2 - 4/3 = 2/3; row 5: 3/4.
# Breslow, g0: one term of weight 3, denominator 9/2: loglik -3 log(9/2) - 1/2 log(3/2) - log 4,
#   U = (1 - 3 * 10/9) + 1/3 + 3/4 = -5/4, I = 3 * 116/81 + 1/9 + 3/16.
# ------------------------------------------------------------------------------------------------
HAND = pd.DataFrame(
    {
        "start": [0.0, 0, 2, 1, 0, 0, 1],
        "stop": [2.0, 2, 5, 3, 2, 2, 4],
        "event": [1, 1, 0, 1, 0, 1, 0],
        "x": [1.0, 0, 1, 2, 3, 1, 0],
        "w": [1.0, 2, 1, 0.5, 1, 1, 3],
        "stratum": ["a", "a", "a", "a", "a", "b", "b"],
    }
)


def _hand(ties: str = "efron", weights: bool = True) -> PartialLikelihood:
    rs = RiskSets(
        HAND["stop"],
        HAND["event"],
        HAND["start"],
        HAND["stratum"],
        weights=HAND["w"] if weights else None,
    )
    return PartialLikelihood(rs, HAND[["x"]].to_numpy(), ties)


def _f(values) -> np.ndarray:
    return np.array([float(F(v)) for v in values])


def test_hand_groups_and_at_risk_ranges():
    rs = _hand().rs
    assert rs.ngroups == 3 and rs.n_strata == 2
    np.testing.assert_array_equal(rs.group_time, [2.0, 3.0, 2.0])
    np.testing.assert_array_equal(rs.group_stratum, [0, 0, 1])
    # start == t is not at risk (row 2 enters at 2), stop == t is (row 4 leaves at 2)
    np.testing.assert_array_equal(rs.hl, [0, 0, 1, 0, 0, 2, 2])
    np.testing.assert_array_equal(rs.hs, [1, 1, 2, 2, 1, 3, 3])
    np.testing.assert_array_equal(rs.ev_pos, [0, 1, 3, 5])
    np.testing.assert_array_equal(rs.ev_group, [0, 0, 1, 2])
    np.testing.assert_array_equal(rs.d, [2, 1, 1])
    np.testing.assert_array_equal(rs.dw, [3, 0.5, 1])
    np.testing.assert_array_equal(rs.n_at_risk(), [4, 2, 2])


def test_hand_weighted_sums():
    rs = _hand().rs
    x = HAND["x"].to_numpy()
    np.testing.assert_allclose(rs.risk_sums(np.ones(7)), [4.5, 1.5, 4], rtol=1e-15)
    np.testing.assert_allclose(rs.risk_sums(x), [5, 2, 1], rtol=1e-15)
    np.testing.assert_allclose(rs.risk_sums(x * x), [12, 3, 1], rtol=1e-15)
    both = rs.risk_sums(np.column_stack([x, x * x]))
    np.testing.assert_allclose(both, [[5, 12], [2, 3], [1, 1]], rtol=1e-15)
    np.testing.assert_allclose(rs.event_sums(np.ones(7)), [3, 0.5, 1], rtol=1e-15)
    np.testing.assert_allclose(rs.event_sums(x), [1, 1, 1], rtol=1e-15)
    # per-row sums over the at-risk groups
    np.testing.assert_allclose(rs.row_sums(np.array([1.0, 10, 100])), [1, 1, 10, 11, 1, 100, 100])
    m = _hand().moments(np.zeros(7))
    np.testing.assert_allclose(m.S0, [4.5, 1.5, 4], rtol=1e-15)
    np.testing.assert_allclose(m.S2[:, 0, 0], [12, 3, 1], rtol=1e-15)
    np.testing.assert_allclose(m.D0, [3, 0.5, 1], rtol=1e-15)
    np.testing.assert_allclose(m.D2[:, 0, 0], [1, 2, 1], rtol=1e-15)


def test_hand_efron_terms():
    t = _hand().ties
    np.testing.assert_array_equal(t.group, [0, 0, 1, 2])
    np.testing.assert_array_equal(t.frac, [0, 0.5, 0, 0])
    np.testing.assert_array_equal(t.weight, [1.5, 1.5, 0.5, 1])
    b = _hand("breslow").ties
    np.testing.assert_array_equal(b.frac, [0, 0, 0])
    np.testing.assert_array_equal(b.weight, [3, 0.5, 1])


@pytest.mark.parametrize(
    "ties, loglik, u, info",
    [
        (
            "efron",
            -1.5 * np.log(4.5) - 1.5 * np.log(3) - 0.5 * np.log(1.5) - np.log(4),
            F(-11, 6),
            F(58, 27) + F(19, 8) + F(1, 9) + F(3, 16),
        ),
        (
            "breslow",
            -3 * np.log(4.5) - 0.5 * np.log(1.5) - np.log(4),
            F(-5, 4),
            3 * F(116, 81) + F(1, 9) + F(3, 16),
        ),
    ],
)
def test_hand_loglik_score_information(ties, loglik, u, info):
    lk, score, imat, _ = _hand(ties).evaluate(np.zeros(1))
    assert lk == pytest.approx(loglik, rel=1e-14)
    assert score[0] == pytest.approx(float(u), rel=1e-14)
    assert imat[0, 0] == pytest.approx(float(info), rel=1e-14)


def test_hand_hazard_and_residuals():
    pl = _hand()
    _, u, _, terms = pl.evaluate(np.zeros(1))
    np.testing.assert_allclose(pl.hazard(terms), _f(["5/6", "1/3", "1/4"]), rtol=1e-14)
    np.testing.assert_allclose(terms.a1, _f(["1/4", "0", "0"]), atol=1e-16)
    expected = _f(["7/12", "7/12", "1/3", "7/6", "5/6", "1/4", "1/4"])
    np.testing.assert_allclose(pl.expected(terms), expected, rtol=1e-14)
    event = HAND["event"].to_numpy()
    np.testing.assert_allclose(pl.martingale_residuals(terms), event - expected, atol=1e-15)
    sch = pl.schoenfeld_residuals(terms)[:, 0]
    np.testing.assert_allclose(sch, _f(["-11/36", "-47/36", "2/3", "3/4"]), rtol=1e-14)
    w = HAND["w"].to_numpy()
    # weighted sums: Schoenfeld and score residuals add up to the score, martingale to 0
    assert w[pl.rs.ev_pos] @ sch == pytest.approx(u[0], rel=1e-14)
    assert w @ pl.score_residuals(terms)[:, 0] == pytest.approx(u[0], rel=1e-14)
    assert w @ pl.martingale_residuals(terms) == pytest.approx(0.0, abs=1e-15)


def test_hazard_is_baseline_whatever_the_shift():
    """hazard() undoes the per-stratum shift of eta: at beta the Breslow jump is d / sum w e^eta."""
    pl = _hand("breslow", weights=False)
    beta = np.array([0.7])
    _, _, _, terms = pl.evaluate(beta)
    eta = 0.7 * HAND["x"].to_numpy()
    rs = pl.rs
    want = rs.d / rs.risk_sums(np.exp(eta))
    np.testing.assert_allclose(pl.hazard(terms), want, rtol=1e-14)
    # an offset adds to eta: a constant one scales the baseline hazard
    _, _, _, t2 = pl.evaluate(beta, offset=np.full(7, 2.0))
    np.testing.assert_allclose(pl.hazard(t2), want * np.exp(-2.0), rtol=1e-14)


def test_right_censored_and_unstratified():
    rs = RiskSets(HAND["stop"], HAND["event"])  # no start: at risk from -inf
    np.testing.assert_array_equal(rs.group_time, [2.0, 3.0])
    np.testing.assert_array_equal(rs.n_at_risk(), [7, 3])  # stop >= t
    np.testing.assert_array_equal(rs.d, [3, 1])
    codes, k = strata_codes(["b", "a", "b"])
    assert k == 2 and list(codes) == [1, 0, 1]


def test_no_events():
    rs = RiskSets([1.0, 2.0], [0, 0], [0.0, 0.0], weights=[1.0, 2.0])
    assert rs.ngroups == 0 and rs.group_time.size == 0 and rs.n_at_risk().size == 0
    assert rs.risk_sums(np.ones(2)).size == 0 and rs.row_sums(np.zeros(0)).tolist() == [0, 0]
    for method in ("efron", "breslow"):
        t = rs.ties(method)
        assert t.group.size == t.gstart.size == 0


def test_bad_input():
    with pytest.raises(ValueError, match="weights"):
        RiskSets([1.0, 2.0], [1, 0], weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="lengths"):
        RiskSets([1.0, 2.0], [1, 0, 1])
    with pytest.raises(ValueError, match="ties"):
        RiskSets([1.0, 2.0], [1, 0]).ties("exact")
    with pytest.raises(ValueError, match="x must be"):
        PartialLikelihood(RiskSets([1.0, 2.0], [1, 0]), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="weights must be finite and > 0"):
        coxph_fit(HAND[["x"]], HAND["stop"], HAND["event"], weights=np.zeros(7))
    with pytest.raises(ValueError, match="offset"):
        coxph_fit(HAND[["x"]], HAND["stop"], HAND["event"], offset=np.full(7, np.nan))


# ------------------------------------------------------------------------------------------------
# Properties on the recurrent-event fixture (1050 rows, integer days: many ties)
# ------------------------------------------------------------------------------------------------


def _rec() -> pd.DataFrame:
    return pd.read_csv(FIX / "cox" / "recurrent.csv")


def _fit(df: pd.DataFrame, **kw):
    return coxph_fit(
        df[["arm", "x"]], df["stop"], df["event"], start=df["start"], cluster=df["id"], **kw
    )


def _assert_same_fit(a, b, rtol: float = 1e-12) -> None:
    np.testing.assert_allclose(a.coef, b.coef, rtol=rtol)
    np.testing.assert_allclose(a.var, b.var, rtol=rtol)
    np.testing.assert_allclose(a.robust_var, b.robust_var, rtol=rtol)
    np.testing.assert_allclose(a.loglik, b.loglik, rtol=rtol)
    assert a.score_test == pytest.approx(b.score_test, rel=rtol)
    assert a.robust_score_test == pytest.approx(b.robust_score_test, rel=rtol)
    assert a.iterations == b.iterations


def test_integer_weights_equal_duplicated_rows_breslow():
    df = _rec()
    k = np.random.default_rng(11).integers(1, 4, len(df))
    weighted = _fit(df, weights=k, ties="breslow")
    dup = _fit(df.loc[df.index.repeat(k)], ties="breslow")
    _assert_same_fit(weighted, dup)


def test_integer_weights_on_censored_rows_equal_duplicated_rows_efron():
    """Efron's correction counts tied events, not their weight (R's agfit4 too), so weight k on
    an event row is not k tied events; on censored rows integer weights are duplicates."""
    df = _rec()
    k = np.where(df["event"] == 1, 1, np.random.default_rng(12).integers(1, 4, len(df)))
    _assert_same_fit(_fit(df, weights=k), _fit(df.loc[df.index.repeat(k)]))
    k_ev = np.random.default_rng(13).integers(1, 4, len(df))
    a, b = _fit(df, weights=k_ev), _fit(df.loc[df.index.repeat(k_ev)])
    assert abs(a.loglik[1] - b.loglik[1]) > 1.0  # the tied-event terms differ


def test_integer_weights_equal_duplicated_rows_in_the_sums():
    df = _rec()
    k = np.random.default_rng(14).integers(1, 4, len(df))
    dup = df.loc[df.index.repeat(k)]
    a = RiskSets(df["stop"], df["event"], df["start"], df["enum"], weights=k)
    b = RiskSets(dup["stop"], dup["event"], dup["start"], dup["enum"])
    v = df[["arm", "x"]].to_numpy()
    np.testing.assert_allclose(a.risk_sums(v), b.risk_sums(dup[["arm", "x"]].to_numpy()))
    np.testing.assert_allclose(a.event_sums(v), b.event_sums(dup[["arm", "x"]].to_numpy()))
    np.testing.assert_array_equal(a.dw, b.d)
    np.testing.assert_array_equal(a.group_time, b.group_time)


@pytest.mark.parametrize("weights", [False, True])
@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_offset_equal_to_x_beta_is_a_fixed_coefficient(ties, weights):
    df = _rec()
    w = np.linspace(0.3, 2.0, len(df)) if weights else None
    b = np.array([-0.3, 0.25])
    rs = RiskSets(df["stop"], df["event"], df["start"], weights=w)
    full = PartialLikelihood(rs, df[["arm", "x"]].to_numpy(), ties)
    part = PartialLikelihood(rs, df[["arm"]].to_numpy(), ties)
    lk_f, u_f, i_f, t_f = full.evaluate(b)
    lk_p, u_p, i_p, t_p = part.evaluate(b[:1], offset=b[1] * df["x"].to_numpy())
    assert lk_p == pytest.approx(lk_f, rel=1e-13)
    assert u_p[0] == pytest.approx(u_f[0], rel=1e-12)
    assert i_p[0, 0] == pytest.approx(i_f[0, 0], rel=1e-12)
    np.testing.assert_allclose(part.hazard(t_p), full.hazard(t_f), rtol=1e-12)
    # the engine's fit with the offset maximises the likelihood with that coefficient fixed
    fit = coxph_fit(
        df[["arm"]],
        df["stop"],
        df["event"],
        start=df["start"],
        ties=ties,
        weights=w,
        offset=b[1] * df["x"],
    )
    fixed = coxph_fit(
        df[["arm", "x"]],
        df["stop"],
        df["event"],
        start=df["start"],
        ties=ties,
        weights=w,
        init=[fit.coef[0], b[1]],
        max_iter=0,
    )
    assert fit.converged
    assert fit.loglik[1] == pytest.approx(fixed.loglik[0], rel=1e-13)
    assert abs(fixed.u[0]) < 1e-6 * np.sqrt(1 / fit.var[0, 0])


def test_weighted_fit_does_not_depend_on_row_order():
    df = _rec()
    w = 0.5 + (df["id"] % 5) / 3
    perm = np.random.default_rng(3).permutation(len(df))
    a = _fit(df, weights=w, offset=df["x"] / 10)
    d2, w2 = df.iloc[perm], w.iloc[perm]
    b = _fit(d2, weights=w2, offset=d2["x"] / 10)
    _assert_same_fit(a, b, rtol=1e-10)
    np.testing.assert_allclose(a.score_residuals[perm], b.score_residuals, atol=1e-12)


def test_scaling_all_weights_scales_the_information_not_the_estimate():
    df = _rec()
    w = 0.5 + (df["id"] % 5) / 3
    a, b = _fit(df, weights=w), _fit(df, weights=3 * w)
    np.testing.assert_allclose(a.coef, b.coef, rtol=1e-10)
    np.testing.assert_allclose(a.var, 3 * b.var, rtol=1e-10)
    np.testing.assert_allclose(a.robust_var, b.robust_var, rtol=1e-10)  # D'D is scale-free


# ------------------------------------------------------------------------------------------------
# Agreement with R: coxph with case weights and offsets
# ------------------------------------------------------------------------------------------------

R_SPECS = {
    "ag_w_efron": dict(data="rec", cluster=True, w=True),
    "ag_w_breslow": dict(data="rec", cluster=True, w=True, ties="breslow"),
    "ag_w_rowrobust": dict(data="rec", w=True),
    "ag_off_efron": dict(data="rec", cluster=True, off=True),
    "pwp_w_off_efron": dict(data="rec", cluster=True, w=True, off=True, strata=True),
    "first_w_off_efron": dict(data="fe", w=True, off=True),
    "first_w_off_breslow": dict(data="fe", w=True, off=True, ties="breslow"),
}


def _r_data(name: str) -> pd.DataFrame:
    d = REF["data"][name]
    return pd.read_csv(FIX / "cox" / d["file"]).assign(w=d["weights"], off=d["offset"])


def _assert_rel(got, want, what: str, rtol: float = RTOL) -> None:
    got = np.asarray(got, dtype=float)
    want = np.asarray(want, dtype=float).reshape(got.shape)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=0, err_msg=what)


def test_r_reference_covers_the_specs():
    assert set(REF["fits"]) == set(R_SPECS)
    assert REF["survival_version"] == "3.5.3"


@pytest.mark.parametrize("key", sorted(R_SPECS))
def test_weights_and_offsets_match_r(key):
    spec, ref = R_SPECS[key], REF["fits"][key]
    df = _r_data(spec["data"])
    rec = spec["data"] == "rec"
    X = df[["arm", "x"] if rec else ["arm", "x", "age"]]
    stop, event = (df["stop"], df["event"]) if rec else (df["time"], df["status"])
    w = df["w"] if spec.get("w") else None
    off = df["off"] if spec.get("off") else None
    fit = coxph_fit(
        X,
        stop,
        event,
        start=df["start"] if rec else None,
        strata=df["enum"] if spec.get("strata") else None,
        cluster=df["id"] if spec.get("cluster") else None,
        ties=spec.get("ties", "efron"),
        weights=w,
        offset=off,
        residuals=True,
    )
    assert fit.converged and fit.message == ""
    assert fit.iterations == ref["iter"]
    assert (fit.n, fit.n_events) == (ref["n"], ref["nevent"])
    _assert_rel(fit.coef, ref["coef"], "coef")
    _assert_rel(fit.var, ref["var"], "naive var")
    # robust: with a cluster, or (R's default) when some weight is not an integer
    assert fit.robust_var is not None and ref["robust_var"] is not None
    _assert_rel(fit.robust_var, ref["robust_var"], "robust var")
    _assert_rel(fit.robust_score_test, ref["rscore"], "robust score test")
    _assert_rel(fit.loglik, ref["loglik"], "loglik")
    _assert_rel(fit.score_test, ref["score"], "score test")
    _assert_rel(fit.wald_test, ref["wald"], "wald test")
    want = np.asarray(ref["score_resid"], dtype=float).reshape(fit.score_residuals.shape)
    np.testing.assert_allclose(fit.score_residuals, want, rtol=0, atol=RTOL * np.abs(want).max())
    # martingale residuals from the partial likelihood at R's coefficients
    rs = RiskSets(
        stop,
        event,
        df["start"] if rec else None,
        df["enum"] if spec.get("strata") else None,
        weights=w,
    )
    pl = PartialLikelihood(rs, X.to_numpy(float), spec.get("ties", "efron"))
    terms = pl.evaluate(np.asarray(ref["coef"]), offset=None if off is None else off.to_numpy())[3]
    mart = np.asarray(ref["martingale"], dtype=float)
    np.testing.assert_allclose(
        pl.martingale_residuals(terms), mart, rtol=0, atol=RTOL * np.abs(mart).max()
    )
    # Schoenfeld residuals: R sorts them by time (ties in its own order), so compare both sorted
    # by (time, residuals rounded to 8 decimals: rounding noise must not reorder them)
    sch = pl.schoenfeld_residuals(terms)
    t_ev = np.asarray(stop, dtype=float)[rs.ev_pos]
    r_sch = np.asarray(ref["schoenfeld"], dtype=float).reshape(sch.shape)
    r_t = np.asarray(ref["schoenfeld_time"], dtype=float)
    mine = sch[np.lexsort((*np.round(sch, 8).T[::-1], t_ev))]
    theirs = r_sch[np.lexsort((*np.round(r_sch, 8).T[::-1], r_t))]
    np.testing.assert_allclose(mine, theirs, rtol=0, atol=RTOL * np.abs(theirs).max())
