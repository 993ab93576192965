"""Ghosh-Lin marginal mean and proportional means model with death as a terminal event.

References: mets::recreg and mets::recurrentMarginal (tests/fixtures/ghosh_lin: the R script,
its input rows and the JSON it wrote), hand calculations, the Nelson-Aalen mean function and
the Andersen-Gill model when nobody dies, and a simulated cohort with a known while-alive
marginal mean (recurstudy.simulate.truth).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recurstudy.models import ModelSpec, NotEstimable, fit_spec, get_model
from recurstudy.models.coxph_engine import coxph_fit
from recurstudy.models.ghosh_lin import (
    ghosh_lin_regression,
    marginal_mean_terminal,
    rows_from_counting_process,
)
from recurstudy.models.survival import mean_cumulative_function

FIXTURES = Path(__file__).parent / "fixtures" / "ghosh_lin"
SETS = {
    "simulated": (("control", "intervention"), ["age"]),
    "bladder1": (("placebo", "thiotepa"), ["number", "size"]),
    "demo": (("control", "intervention"), ["age", "prior_episodes", "baseline_pain"]),
}
# mets and this module compute the same closed-form sums and solve the same estimating
# equation by Newton-Raphson to convergence (|step| < 1e-10 here, lava::NR's default there):
# agreement is at rounding level (observed < 1e-12); 1e-6 relative leaves room for platform
# arithmetic, not for a different estimator (a wrong censoring weight or a missing variance term
# moves the SE by 1e-4 or more).
RTOL = 1e-6


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads((FIXTURES / "ghosh_lin_reference.json").read_text())


def _rows(name: str) -> pd.DataFrame:
    return pd.read_csv(FIXTURES / f"{name}_rows.csv")


@pytest.mark.parametrize("name", sorted(SETS))
@pytest.mark.parametrize("variant", ["crude", "adjusted", "crude_strata"])
def test_regression_agrees_with_mets_recreg(reference, name, variant):
    (control, interv), covariates = SETS[name]
    d = _rows(name)
    arm = (d["arm"] == interv).to_numpy(float)
    X = arm[:, None] if variant != "adjusted" else np.column_stack([arm, d[covariates]])
    strata = d["arm"].to_numpy() if variant == "crude_strata" else None
    fit = ghosh_lin_regression(d["entry"], d["exit"], d["status"], X, d["participant_id"], strata)
    ref = reference[name][variant]
    assert fit.converged
    np.testing.assert_allclose(fit.coef, np.atleast_1d(ref["coef"]), rtol=RTOL)
    np.testing.assert_allclose(np.sqrt(np.diag(fit.var)), np.atleast_1d(ref["se"]), rtol=RTOL)
    # mets's se1.coef: without the censoring martingale term of the estimated weights
    np.testing.assert_allclose(
        np.sqrt(np.diag(fit.var_naive_iid)), np.atleast_1d(ref["se_naive_weights"]), rtol=RTOL
    )


@pytest.mark.parametrize("name", sorted(SETS))
def test_marginal_mean_agrees_with_mets_recurrent_marginal(reference, name):
    arms, _ = SETS[name]
    d = _rows(name)
    for arm in arms:
        sub = d[d["arm"] == arm]
        mm = marginal_mean_terminal(sub["entry"], sub["exit"], sub["status"], sub["participant_id"])
        ref = reference[name]["marginal"][arm]
        np.testing.assert_allclose(mm.times, ref["time"], rtol=1e-12)
        np.testing.assert_allclose(mm.mean, ref["mean"], rtol=RTOL)
        np.testing.assert_allclose(mm.std_err, ref["std_err"], rtol=RTOL)


def test_fixtures_have_deaths_and_censoring():
    # the comparisons above exercise the death weights and the censoring term
    for name, min_deaths in (("simulated", 10), ("bladder1", 10), ("demo", 5)):
        status = _rows(name)["status"]
        assert (status == 0).sum() > 10, name
        assert (status == 2).sum() >= min_deaths, name


# ------------------------------------------------------------------ hand and edge cases


def test_marginal_mean_by_hand_death_before_any_episode_and_ties():
    # Four participants, one arm. A: episodes on days 2 and 4, censored on 6. B: dies on day 1
    # (no episode). C: episode on day 2 (tied with A's), dies on day 3. D: censored on day 5.
    # Risk sets (start < t <= stop): day 1: 4 (B dies: S = 3/4 after); day 2: 3 at risk (A, C,
    # D), 2 episodes: dmu = S(2-) * 2/3 = 3/4 * 2/3 = 1/2; day 3: C dies, 3 at risk: S = 3/4 *
    # 2/3 = 1/2; day 4: 2 at risk (A, D), 1 episode: dmu = 1/2 * 1/2 = 1/4.  mu = 1/2, 3/4.
    rows = pd.DataFrame(
        {
            "participant_id": ["A", "A", "A", "B", "C", "C", "D"],
            "entry": [0, 2, 4, 0, 0, 2, 0],
            "exit": [2, 4, 6, 1, 2, 3, 5],
            "status": [1, 1, 0, 2, 1, 2, 0],
        }
    )
    mm = marginal_mean_terminal(rows["entry"], rows["exit"], rows["status"], rows["participant_id"])
    np.testing.assert_allclose(mm.times, [2, 4])
    np.testing.assert_allclose(mm.mean, [0.5, 0.75], rtol=1e-14)
    np.testing.assert_allclose(mm.surv, [0.75, 0.5], rtol=1e-14)
    # Standard error by hand at day 2: psi_i(2) = A_i - mu(2) B_i + C_i with (Y = 4 on day 1,
    # 3 on day 2; S(1-) = 1, S(2-) = 3/4; mu(1) = 0):
    #   A_i = S(2-)/3 (dN_i(2) - Y_i(2) 2/3); B_i = (dD_i(1) - Y_i(1)/4)/4; C_i = mu(1) B-term = 0.
    a = {p: 0.75 / 3 * (dn - 2 / 3) for p, dn in (("A", 1), ("C", 1), ("D", 0))}
    a["B"] = 0.0
    b = {p: (1 if p == "B" else 0) / 4 - 1 / 16 for p in "ABCD"}
    var2 = sum((a[p] - 0.5 * b[p]) ** 2 for p in "ABCD")
    assert mm.std_err[0] == pytest.approx(np.sqrt(var2), rel=1e-12)


def test_without_deaths_the_marginal_mean_is_the_nelson_aalen_mcf():
    d = _rows("demo")  # ties broken; deaths made censorings: no terminal event
    d = d.assign(status=d["status"].replace(2, 0))
    sub = d[d["arm"] == "control"]
    mm = marginal_mean_terminal(sub["entry"], sub["exit"], sub["status"], sub["participant_id"])
    cp = pd.DataFrame(
        {
            "participant_id": sub["participant_id"],
            "start": sub["entry"],
            "stop": sub["exit"],
            "event": (sub["status"] == 1).astype(int),
        }
    )
    mcf = mean_cumulative_function(cp)
    np.testing.assert_allclose(mm.times, mcf["time"])
    np.testing.assert_allclose(mm.mean, mcf["mcf"], rtol=1e-12)
    np.testing.assert_allclose(mm.std_err, mcf["std_err"], rtol=1e-10)


def test_without_deaths_the_regression_is_andersen_gill_breslow():
    # No death: nobody stays in the risk set after follow-up, the censoring weights never
    # enter, and the estimating equation is the Andersen-Gill partial-likelihood score with
    # Breslow ties; the robust variance is coxph's cluster(id) one.
    rng = np.random.default_rng(3)
    rows = []
    for i in range(200):
        t, arm = 0, i % 2
        while True:
            t_next = t + int(rng.integers(1, 40)) * (1 + arm)
            if t_next > 120:
                rows.append((i, arm, t, 120, 0))
                break
            rows.append((i, arm, t, t_next, 1))
            t = t_next
    d = pd.DataFrame(rows, columns=["id", "arm", "start", "stop", "event"])
    d = d[d["stop"] > d["start"]]
    X = d[["arm"]].to_numpy(float)
    gl = ghosh_lin_regression(d["start"], d["stop"], d["event"], X, d["id"])
    ag = coxph_fit(X, d["stop"], d["event"], start=d["start"], cluster=d["id"], ties="breslow")
    np.testing.assert_allclose(gl.coef, ag.coef, rtol=1e-9)
    np.testing.assert_allclose(gl.var, ag.robust_var, rtol=1e-8)


def test_rows_from_counting_process_marks_deaths_and_same_day_ends():
    cp = pd.DataFrame(
        {
            "participant_id": ["A", "A", "B", "C"],
            "arm": "control",
            "start": [0, 3, 0, 0],
            "stop": [3, 9, 5, 7],
            "event": [1, 0, 0, 1],
            "terminal": [0, 1, 0, 1],
        }
    )
    rows = rows_from_counting_process(cp)
    # C's last row is an episode on the day they died: a zero-length end row carries the death
    assert rows[["participant_id", "entry", "exit", "status"]].values.tolist() == [
        ["A", 0.0, 3.0, 1],
        ["A", 3.0, 9.0, 2],
        ["B", 0.0, 5.0, 0],
        ["C", 0.0, 7.0, 1],
        ["C", 7.0, 7.0, 2],
    ]


def test_model_on_the_bladder_cohort_and_failures():
    from recurstudy.derive import counting_process
    from recurstudy.validate import validate_cohort

    config = {
        "data": {"participants": "participants.csv", "episodes": "episodes.csv"},
        "arms": {"control": "placebo", "intervention": "thiotepa"},
        "covariates": {"number": "numeric", "size": "numeric"},
    }
    t = validate_cohort(config, FIXTURES / "bladder1").tables
    cp = counting_process(t["participants"], t["episodes"], config)
    assert cp["terminal"].sum() == 21  # 22 deaths, one on day 0 (no interval)
    spec = ModelSpec("gl", "ghosh_lin", "arm + number", arms=config["arms"])
    res = get_model("ghosh_lin").fit(spec, counting_process=cp)
    assert res.converged
    assert res.table["term"].tolist() == ["arm[T.thiotepa]", "number"]
    assert res.table["robust"].all()
    mm = res.extras["marginal_mean"]
    assert mm.columns.tolist() == ["arm", "time", "mean", "std_err", "conf_low", "conf_high"]
    assert mm["arm"].unique().tolist() == ["placebo", "thiotepa"]
    np.testing.assert_allclose(
        mm["conf_low"] * mm["conf_high"], mm["mean"] ** 2, rtol=1e-12
    )  # log-transformed interval
    # the whole days carry ties: mets would differ slightly; the jittered rows agree (above).
    again = get_model("ghosh_lin").fit(spec, counting_process=cp)
    pd.testing.assert_frame_equal(res.table, again.table)
    one_arm = cp[cp["arm"] == "placebo"]
    failed = fit_spec(spec, {"counting_process": one_arm})
    assert not failed.converged and "no participants in the thiotepa arm" in failed.message
    with pytest.raises(NotEstimable, match="terminal"):
        rows_from_counting_process(cp.drop(columns="terminal"))


def test_describe_states_the_while_alive_strategy():
    desc = get_model("ghosh_lin").describe(ModelSpec("gl", "ghosh_lin"))
    strategies = dict(desc.strategies)
    assert strategies["terminal event"].startswith("while alive")
    assert strategies["informative dropout"].startswith("hypothetical")
    strat = get_model("ghosh_lin").describe(
        ModelSpec("gl", "ghosh_lin", options={"censoring_strata": "arm"})
    )
    assert "cens.model = ~strata(arm)" in strat.r_call


# ------------------------------------------------------------ simulation with known truth


def test_simulation_naive_andersen_gill_misses_the_while_alive_mean_ratio():
    # Deaths linked to the episode frailty and three times as frequent in the intervention arm
    # (about 40% die over 182 days): the Andersen-Gill rate ratio is a while-alive *rate* ratio
    # (0.46 here), the truth about the expected number of episodes while alive is 0.364
    # (recurstudy.simulate.truth, numeric integration). One replicate, seed fixed: the
    # Ghosh-Lin log ratio is within 3 robust SE of the truth, Andersen-Gill more than 3 SE away,
    # and each arm's marginal mean at day 182 within 3 SE of its true value.
    from recurstudy.derive import counting_process
    from recurstudy.simulate import SimulationParams, simulate_cohort, truth

    p = SimulationParams(
        n=2000,
        seed=1,
        rate_ratio=0.5,
        death_rate_per_day=0.002,
        death_frailty_link=1.0,
        death_rate_ratio=3.0,
    )
    tables = simulate_cohort(p)
    tr = truth(p)
    config = {"arms": {"control": "control", "intervention": "intervention"}, "covariates": {}}
    cp = counting_process(tables["participants"], tables["episodes"], config)
    true_log = np.log(tr["marginal_mean_ratio_while_alive"])
    gl = get_model("ghosh_lin").fit(ModelSpec("gl", "ghosh_lin"), counting_process=cp)
    ag = get_model("andersen_gill").fit(ModelSpec("ag", "andersen_gill"), counting_process=cp)
    g, a = gl.table.iloc[0], ag.table.iloc[0]
    assert abs(g["estimate"] - true_log) < 3 * g["std_error"]
    assert abs(a["estimate"] - true_log) > 3 * a["std_error"]
    mm = gl.extras["marginal_mean"]
    for arm in ("control", "intervention"):
        last = mm[mm["arm"] == arm].iloc[-1]
        assert abs(last["mean"] - tr["marginal_mean_while_alive"][arm][-1]) < 3 * last["std_err"]


def test_censoring_strata_option_is_checked():
    from recurstudy.config import ConfigError, validate_config

    base = {"data": {"participants": "p.csv", "episodes": "e.csv"}}
    ok = {"name": "gl", "kind": "ghosh_lin", "options": {"censoring_strata": "arm"}}
    validate_config({**base, "models": [ok]})
    bad = {**ok, "options": {"censoring_strata": "site"}}
    with pytest.raises(ConfigError, match=re.escape("'censoring_strata' must be 'none' | 'arm'")):
        validate_config({**base, "models": [bad]})
