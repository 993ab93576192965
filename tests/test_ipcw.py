"""IPCW Andersen-Gill and negative binomial (recurstudy.models.ipcw): splitting, weights, the
equal-weights reduction to the unweighted fits, R's coxph / glm on the same weights, and recovery
of a known marginal rate ratio under dropout that depends on the episodes so far."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recurstudy.models import ModelSpec, fit_spec, get_model
from recurstudy.models.ipcw import (
    dropout_rows,
    glm_nb_theta,
    ipcw_weights,
    split_at,
    weighted_nb_rate,
)

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures" / "ipcw"
ARM = "arm[T.intervention]"
ARMS = ("control", "intervention")
LABELS = np.array(ARMS)


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------


def simulate(
    n: int,
    seed: int,
    *,
    rr: float = 0.5,
    rate: float = 0.05,
    frailty_var: float = 2.0,
    h0: float = 0.01,
    link: float = 0.25,
    days: float = 60.0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A cohort whose withdrawal depends on the episodes so far (dropout at random given the
    history): episode intensity rate * rr**arm * Z (Z gamma, mean 1), withdrawal hazard
    h0 * exp(link * episodes so far), competing in continuous time; withdrawal is recorded at
    the end of its day (ceiling).  The marginal rate ratio had nobody withdrawn is rr.
    Returns (counting process, participants with end_reason)."""
    rng = np.random.default_rng(seed)
    arm = rng.permutation(np.arange(n) % 2)
    k = 1.0 / frailty_var
    lam = rate * rr**arm * rng.gamma(k, 1.0 / k, n)
    t = np.zeros(n)
    nev = np.zeros(n, dtype=np.int64)
    alive = np.ones(n, dtype=bool)
    why = np.full(n, "completed", dtype=object)
    rows = []
    while alive.any():
        idx = np.flatnonzero(alive)
        h = h0 * np.exp(link * nev[idx])
        total = lam[idx] + h
        nxt = t[idx] + rng.exponential(1.0, idx.size) / total
        is_ep = rng.random(idx.size) < lam[idx] / total
        done = nxt >= days
        ep = ~done & is_ep
        drop = ~done & ~is_ep
        fin = done | drop
        stop = np.where(done, days, np.minimum(np.ceil(nxt), days))
        for mask, stops, event in ((ep, nxt, 1), (fin, stop, 0)):
            rows.append(
                pd.DataFrame(
                    {
                        "pid": idx[mask],
                        "episode": nev[idx[mask]] + 1,
                        "start": t[idx[mask]],
                        "stop": stops[mask],
                        "event": event,
                    }
                )
            )
        why[idx[drop]] = "withdrawn"
        nev[idx[ep]] += 1
        t[idx[ep]] = nxt[ep]
        alive[idx[fin]] = False
    cp = pd.concat(rows, ignore_index=True)
    ids = np.char.add("S", np.char.zfill(np.arange(n).astype(str), 5))
    cp["participant_id"] = ids[cp["pid"].to_numpy()]
    cp["arm"] = pd.Categorical(LABELS[arm[cp["pid"].to_numpy()]], categories=list(ARMS))
    cp = cp.sort_values(["participant_id", "start"], kind="mergesort").reset_index(drop=True)
    cp["gap"] = cp["stop"] - cp["start"]
    cp = cp[["participant_id", "arm", "episode", "start", "stop", "gap", "event"]]
    participants = pd.DataFrame({"participant_id": ids, "arm": LABELS[arm], "end_reason": why})
    return cp, participants


@cache
def _demo() -> tuple[pd.DataFrame, pd.DataFrame]:
    from recurstudy.config import load_config
    from recurstudy.derive import counting_process
    from recurstudy.validate import validate_cohort

    config = load_config(REPO / "config" / "config.yaml")
    tables = validate_cohort(config, REPO).tables
    cp = counting_process(tables["participants"], tables["episodes"], config)
    return cp, tables["participants"]


def demo_data() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The demo cohort's counting process and validated participants (fresh copies)."""
    cp, participants = _demo()
    return cp.copy(), participants.copy()


def fit(kind: str, cp: pd.DataFrame, participants: pd.DataFrame, **options):
    data = {"counting_process": cp, "participants": participants}
    return fit_spec(ModelSpec("m", kind, options=options), data)


def arm_row(result) -> pd.Series:
    return result.table.set_index("term").loc[ARM]


# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------


def test_split_at_by_hand():
    cp = pd.DataFrame(
        {
            "participant_id": ["a", "a", "b"],
            "arm": ["control", "control", "intervention"],
            "start": [0.0, 5.0, 0.0],
            "stop": [5.0, 12.0, 3.0],
            "event": [1, 0, 1],
        }
    )
    out = split_at(cp, np.array([3.0, 5.0, 8.0, 10.0, 20.0]))
    # (0,5] cut at 3 -> (0,3], (3,5]; (5,12] cut at 8, 10 -> (5,8], (8,10], (10,12]; (0,3] whole
    assert out["start"].tolist() == [0, 3, 5, 8, 10, 0]
    assert out["stop"].tolist() == [3, 5, 8, 10, 12, 3]
    assert out["event"].tolist() == [0, 1, 0, 0, 0, 1]  # the event stays on the last piece
    assert out["row"].tolist() == [0, 0, 1, 1, 1, 2]
    assert split_at(cp, np.array([])).shape[0] == 3


def test_dropout_rows_mark_the_last_row_of_informative_ends():
    cp, participants = simulate(200, 1)
    d = dropout_rows(cp, participants, ["withdrawn"])
    last = cp.groupby("participant_id").tail(1).index
    withdrawn = set(participants.loc[participants["end_reason"] == "withdrawn", "participant_id"])
    expected = np.zeros(len(cp), dtype=int)
    expected[[i for i in last if cp.loc[i, "participant_id"] in withdrawn]] = 1
    np.testing.assert_array_equal(d, expected)
    assert dropout_rows(cp, participants, ["lost_to_followup"]).sum() == 0


def test_weights_are_constant_pieces_of_the_cox_dropout_model():
    """By hand for one participant: sw = exp(L_den(a) - L_num(a)), with L_den from the Breslow
    baseline of the dropout Cox model and the row's own covariates, L_num the arm's
    Nelson-Aalen; and every weight's piece holds no dropout time strictly inside."""
    cp, participants = simulate(400, 3)
    d = dropout_rows(cp, participants, ["withdrawn"])
    w = ipcw_weights(cp, d, [], arms=ARMS)
    pieces = w.pieces
    times = np.unique(cp["stop"].to_numpy()[d == 1])
    inside = (times[None, :] > pieces["start"].to_numpy()[:, None]) & (
        times[None, :] < pieces["stop"].to_numpy()[:, None]
    )
    assert not inside.any()
    # Hand computation for a participant with several rows and the coefficients of the model.
    b = w.dropout_model.set_index("term")["estimate"]
    from recurstudy.models.coxph_engine import coxph_fit

    cpx = cp.assign(e=cp["episode"] - 1, z=(cp["arm"] == "intervention").astype(float))
    refit = coxph_fit(
        cpx[["z", "e"]].to_numpy(),
        cpx["stop"],
        d,
        start=cpx["start"],
        ties="breslow",
    )
    np.testing.assert_allclose(refit.coef, b.to_numpy(), rtol=1e-12)
    eta = cpx[["z", "e"]].to_numpy() @ refit.coef
    # Breslow baseline jumps: dropouts at t / sum over rows at risk of exp(eta)
    start, stop = cpx["start"].to_numpy(), cpx["stop"].to_numpy()
    jumps = np.array(
        [
            ((stop == t) & (d == 1)).sum() / np.exp(eta[(start < t) & (stop >= t)]).sum()
            for t in times
        ]
    )
    pid = cpx.loc[cpx.groupby("participant_id")["episode"].transform("max") >= 3, "participant_id"]
    pid = pid.iloc[0]
    own = cpx[cpx["participant_id"] == pid]
    arm = own["arm"].iloc[0]
    arm_rows = cpx["arm"] == arm
    for piece in pieces[pieces["participant_id"] == pid].itertuples():
        a = piece.start
        L_den = sum(
            jumps[j] * np.exp(eta[own.index[(own["start"] < t) & (own["stop"] >= t)]]).sum()
            for j, t in enumerate(times)
            if t <= a
        )
        L_num = sum(
            ((stop == t) & (d == 1) & arm_rows).sum() / ((start < t) & (stop >= t) & arm_rows).sum()
            for t in times
            if t <= a
        )
        assert piece.sw == pytest.approx(np.exp(L_den - L_num), rel=1e-12)


def test_truncation_clips_at_the_percentiles():
    cp, participants = simulate(400, 3)
    d = dropout_rows(cp, participants, ["withdrawn"])
    w = ipcw_weights(cp, d, [], arms=ARMS, truncate=95)
    lo, hi = np.percentile(w.pieces["sw"], [5, 95])
    assert w.truncated_at == (pytest.approx(lo), pytest.approx(hi))
    np.testing.assert_allclose(w.pieces["weight"], np.clip(w.pieces["sw"], lo, hi))
    assert list(w.diagnostics["weights"].unique()) == ["stabilised", "truncated"]


# ------------------------------------------------------------------------------------------------
# Equal weights: the unweighted fits exactly
# ------------------------------------------------------------------------------------------------


def test_no_informative_dropout_gives_the_unweighted_andersen_gill():
    cp, participants = demo_data()
    participants["end_reason"] = "completed"
    ag = arm_row(fit_spec(ModelSpec("m", "andersen_gill"), {"counting_process": cp}))
    res = fit("ipcw_andersen_gill", cp, participants)
    ip = arm_row(res)
    # same rows, weights all 1: the same arithmetic up to multiplying by 1.0
    assert ip["estimate"] == pytest.approx(ag["estimate"], rel=1e-13)
    assert ip["std_error"] == pytest.approx(ag["std_error"], rel=1e-12)
    assert "all weights 1" in ip["message"]
    w = res.extras["weights"]
    assert (w["min"] == 1).all() and (w["max"] == 1).all()


def test_equal_weights_after_splitting_give_the_unweighted_andersen_gill():
    """Rows split at the dropout times with weights forced to 1 (no covariate effect can make
    that happen, so set them): splitting does not change the partial likelihood."""
    from recurstudy.models.coxph_engine import coxph_fit

    cp, participants = simulate(500, 4)
    d = dropout_rows(cp, participants, ["withdrawn"])
    pieces = ipcw_weights(cp, d, [], arms=ARMS).pieces
    assert len(pieces) > 2 * len(cp)
    x = lambda f: (f["arm"] == "intervention").to_numpy(float)[:, None]  # noqa: E731
    whole = coxph_fit(
        x(cp), cp["stop"], cp["event"], start=cp["start"], cluster=cp["participant_id"]
    )
    split = coxph_fit(
        x(pieces),
        pieces["stop"],
        pieces["event"],
        start=pieces["start"],
        cluster=pieces["participant_id"],
        weights=np.ones(len(pieces)),
    )
    np.testing.assert_allclose(split.coef, whole.coef, rtol=1e-10)
    np.testing.assert_allclose(split.robust_se, whole.robust_se, rtol=1e-10)


def test_piece_rate_model_without_dispersion_is_the_poisson_count_model():
    """With alpha -> 0 and weights 1 the piece-level estimating equation is the Poisson score of
    the participants' counts (same sufficient statistics), and the participant-clustered
    sandwich is the counts model's HC0: an exact reference for weighted_nb_rate."""
    cp, participants = demo_data()
    pieces = split_at(cp, np.array([30.0, 60.0, 90.0]))
    X = np.column_stack([np.ones(len(pieces)), (pieces["arm"] == "intervention").to_numpy(float)])
    b, v, ok = weighted_nb_rate(
        X,
        pieces["event"].to_numpy(float),
        np.log((pieces["stop"] - pieces["start"]).to_numpy(float)),
        np.ones(len(pieces)),
        pieces["participant_id"].to_numpy(),
        1e-12,
    )
    assert ok
    per = cp.groupby("participant_id", sort=True)
    counts = per.first()[["arm"]].reset_index()
    counts["n_episodes"] = per["event"].sum().to_numpy()
    counts["exposure_days"] = per["gap"].sum().to_numpy()
    pois = arm_row(fit_spec(ModelSpec("p", "poisson"), {"counts": counts}))
    assert b[1] == pytest.approx(pois["estimate"], rel=1e-8)
    assert np.sqrt(v[1, 1]) == pytest.approx(pois["std_error"], rel=1e-7)


def test_integer_weights_equal_duplicated_pieces():
    cp, participants = simulate(300, 5)
    pieces = split_at(cp, np.array([20.0, 40.0]))
    w = np.where(pieces["arm"] == "control", 2.0, 1.0) * np.where(pieces["start"] > 30, 3.0, 1.0)
    rep = pieces.loc[pieces.index.repeat(w.astype(int))]

    def solve(frame, weights):
        X = np.column_stack([np.ones(len(frame)), (frame["arm"] == "intervention").to_numpy(float)])
        off = np.log((frame["stop"] - frame["start"]).to_numpy(float))
        y = frame["event"].to_numpy(float)
        return weighted_nb_rate(X, y, off, weights, frame["participant_id"].to_numpy(), 0.7)

    b_w, v_w, _ = solve(pieces, w)
    b_r, v_r, _ = solve(rep, np.ones(len(rep)))
    # two IRLS runs, each stopped at a relative deviance change of 1e-12: ~1e-9 apart
    np.testing.assert_allclose(b_w, b_r, rtol=1e-7)
    np.testing.assert_allclose(v_w, v_r, rtol=1e-7)


# ------------------------------------------------------------------------------------------------
# The models on the demo, and bad input
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ipcw_andersen_gill", "ipcw_negbin"])
def test_demo_fit_and_weight_diagnostics(kind):
    cp, participants = demo_data()
    res = fit(kind, cp, participants)
    row = arm_row(res)
    assert res.converged and bool(row["robust"])
    assert "18 informative dropouts (withdrawn)" in row["message"]
    w = res.extras["weights"].set_index("arm")
    assert list(w.index) == ["control", "intervention", "all"]
    # stabilised weights: mean near 1 (the demo's withdrawals barely depend on anything)
    assert abs(w.loc["all", "mean"] - 1) < 0.01
    assert (w["min"] <= w["p50"]).all() and (w["p50"] <= w["max"]).all()
    comp = res.extras["comparison"].set_index("term").loc[ARM]
    assert comp["estimate_ipcw"] == pytest.approx(row["estimate"], rel=1e-12)
    assert abs(comp["estimate_ipcw"] - comp["estimate_unweighted"]) < 0.01
    desc = get_model(kind).describe()
    assert desc.group == "marginal rate" and desc.ratio and "withdrawn" in desc.estimand


def test_missing_end_reason_is_a_clear_failure():
    cp, participants = demo_data()
    res = fit("ipcw_andersen_gill", cp, participants.drop(columns="end_reason"))
    assert not res.converged
    assert "no end_reason column" in res.message


def test_unknown_dropout_covariate_is_a_clear_failure():
    cp, participants = demo_data()
    res = fit("ipcw_negbin", cp, participants, dropout_covariates=["nope"])
    assert not res.converged and "nope" in res.message


# ------------------------------------------------------------------------------------------------
# Simulation with known truth
# ------------------------------------------------------------------------------------------------


def test_weighted_estimates_recover_the_marginal_rate_ratio():
    """Eight cohorts of 2000 (seeds 0-7; withdrawal hazard 0.01 * exp(0.25 * episodes so far),
    frailty variance 2, 60 days; about 55% withdraw; truth log 0.5 = -0.693).  Measured means:
    naive Andersen-Gill -0.654 (bias +0.039, Monte Carlo SE of the mean 0.016); IPCW
    Andersen-Gill -0.700 (bias -0.006, MC SE 0.017); IPCW rate model with the Poisson working
    variance -0.703 (its unweighted version -0.661); IPCW negative binomial (NB2 working
    variance per piece) -0.727 (bias -0.034, MC SE 0.018; see the module docstring).
    Tolerances: naive bias at least 0.025; IPCW Andersen-Gill and Poisson-working means within
    0.025 (1.5 MC SE) of the truth and closer than the naive; IPCW NB within 0.05."""
    truth = np.log(0.5)
    est = []
    for seed in range(8):
        cp, participants = simulate(2000, seed)
        naive = fit_spec(ModelSpec("m", "andersen_gill"), {"counting_process": cp})
        est.append(
            [
                arm_row(naive)["estimate"],
                arm_row(fit("ipcw_andersen_gill", cp, participants))["estimate"],
                arm_row(fit("ipcw_negbin", cp, participants))["estimate"],
                arm_row(fit("ipcw_negbin", cp, participants, working_variance="poisson"))[
                    "estimate"
                ],
            ]
        )
    naive_m, ag_m, nb_m, pois_m = np.mean(est, axis=0)
    assert naive_m - truth > 0.025
    for m in (ag_m, pois_m):
        assert abs(m - truth) < 0.025
        assert abs(m - truth) < abs(naive_m - truth)
    assert abs(nb_m - truth) < 0.05


# ------------------------------------------------------------------------------------------------
# R reference: the same weights in R's coxph and glm, and R's own weights
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cohort", ["demo", "sim"])
def test_against_r(cohort):
    """tests/fixtures/ipcw/ipcw_reference.R on the pieces and weights of make_data.py: R's
    coxph(weights = sw, cluster) agrees to 1e-8 (both converge to |1 - loglik ratio| < 1e-9;
    the estimates agree far closer), and R's own computation of the weights from the
    counting process (its coxph dropout model, basehaz, survfit by arm) to 1e-9."""
    path = FIX / "ipcw_reference.json"
    if not path.exists():
        pytest.skip("R reference not generated")
    ref = json.loads(path.read_text())[cohort]
    pieces = pd.read_csv(FIX / f"{cohort}_pieces.csv")
    pieces["arm"] = pd.Categorical(pieces["arm"], categories=list(ARMS))
    np.testing.assert_allclose(pieces["sw"], ref["weights_r"], rtol=1e-9)
    # theta by glm.nb's alternation on the participants' counts: R's glm.nb (epsilon 1e-12)
    cp = pd.read_csv(FIX / f"{cohort}_cp.csv")
    per = cp.groupby("participant_id", sort=True)
    z = (per["arm"].first() == "intervention").to_numpy(float)
    theta, _, ok = glm_nb_theta(
        np.column_stack([np.ones(z.size), z]),
        per["event"].sum().to_numpy(float),
        np.log((per["stop"].sum() - per["start"].sum()).to_numpy(float)),
    )
    assert ok and theta == pytest.approx(ref["negbin"]["theta"], rel=1e-6)
    from recurstudy.models.coxph_engine import coxph_fit

    x = (pieces["arm"] == "intervention").to_numpy(float)[:, None]
    f = coxph_fit(
        x,
        pieces["stop"],
        pieces["event"],
        start=pieces["start"],
        cluster=pieces["participant_id"],
        weights=pieces["sw"].to_numpy(),
    )
    assert f.coef[0] == pytest.approx(ref["coxph"]["coef"], rel=1e-8)
    assert f.robust_se[0] == pytest.approx(ref["coxph"]["robust_se"], rel=1e-8)
    X = np.column_stack([np.ones(len(pieces)), x[:, 0]])
    b, v, _ = weighted_nb_rate(
        X,
        pieces["event"].to_numpy(float),
        np.log((pieces["stop"] - pieces["start"]).to_numpy(float)),
        pieces["sw"].to_numpy(),
        pieces["participant_id"].to_numpy(),
        1.0 / ref["negbin"]["theta"],
    )
    np.testing.assert_allclose(b, ref["negbin"]["coef"], rtol=1e-8)
    np.testing.assert_allclose(np.sqrt(np.diag(v)), ref["negbin"]["cluster_se"], rtol=1e-8)


def test_informative_dropout_comes_from_the_config_unless_the_model_sets_it():
    from recurstudy.models import model_specs

    config = {
        "models": [
            {"name": "a", "kind": "ipcw_andersen_gill"},
            {"name": "b", "kind": "ipcw_negbin", "options": {"informative_dropout": ["withdrawn"]}},
            {"name": "c", "kind": "andersen_gill"},
        ],
        "informative_dropout": ["withdrawn", "lost_to_followup"],
    }
    specs = {s.name: s for s in model_specs(config)}
    assert specs["a"].options["informative_dropout"] == ["withdrawn", "lost_to_followup"]
    assert specs["b"].options["informative_dropout"] == ["withdrawn"]
    assert "informative_dropout" not in specs["c"].options
    desc = dict(get_model("ipcw_andersen_gill").describe(specs["a"]).strategies)
    assert "withdrawn or lost_to_followup" in desc["informative dropout"]
    assert desc["informative dropout"].startswith("hypothetical")
    # the fit reads it: lost to follow-up now counts as informative dropout too
    cp, participants = demo_data()
    res = fit("ipcw_andersen_gill", cp, participants, **specs["a"].options)
    assert "35 informative dropouts (withdrawn, lost_to_followup)" in res.message


def test_counts_negbin_does_not_stop_at_a_huge_alpha():
    """The hook in recurstudy.models.counts (_not_below_poisson): on this cohort's counts the
    Newton route stopped at alpha = 8e5 (theta 1e-6, log-likelihood -13774, below the Poisson
    -4072) and reported converged; R's glm.nb gives theta 0.5278215 and arm coefficient
    -0.7616066 (printed to 7 digits), which the BFGS route finds once the bad stop is refused."""
    cp, _ = simulate(2000, 0)
    per = cp.groupby("participant_id", sort=True)
    counts = per.first()[["arm"]].reset_index()
    counts["n_episodes"] = per["event"].sum().to_numpy()
    counts["exposure_days"] = (per["stop"].sum() - per["start"].sum()).to_numpy()
    res = fit_spec(ModelSpec("nb", "negbin"), {"counts": counts})
    assert res.converged
    assert res.extras["dispersion"]["theta"].iloc[0] == pytest.approx(0.5278215, rel=1e-6)
    assert arm_row(res)["estimate"] == pytest.approx(-0.7616066, rel=1e-6)
