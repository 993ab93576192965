"""The pain mixed model (mixed_pain) against lme4::lmer (REML) and on broken data.

Reference: tests/fixtures/counts/count_reference.json ("pain"), lme4 1.1-31, refitted with bobyqa
(rhoend 1e-12) from the default fit ("tight"); the default nloptwrap fit is stored too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recurstudy.models.base import REGISTRY, TIDY_COLUMNS, ModelSpec
from recurstudy.models.pain import PainMixedModel

FIXTURES = Path(__file__).parent / "fixtures" / "counts"
TERM = "arm[T.intervention]"


@pytest.fixture(scope="module")
def ref() -> dict:
    return json.loads((FIXTURES / "count_reference.json").read_text())


def tables(ds: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    p = pd.read_csv(FIXTURES / f"{ds}_pain.csv", parse_dates=["enrolled_on", "assessed_on"])
    participants = p[["participant_id", "arm", "enrolled_on"]].drop_duplicates("participant_id")
    return p[["participant_id", "assessed_on", "nrs"]], participants.reset_index(drop=True)


@pytest.fixture(scope="module")
def fits() -> dict:
    out = {}
    for ds in ("demo", "sim"):
        pain, participants = tables(ds)
        out[ds] = PainMixedModel().fit(
            ModelSpec("pain", "mixed_pain"), pain_scores=pain, participants=participants
        )
    return out


def close(actual, expected, rtol):
    np.testing.assert_allclose(np.asarray(actual, float), np.asarray(expected, float), rtol=rtol)


def test_registered():
    assert REGISTRY["mixed_pain"] is PainMixedModel
    assert PainMixedModel.datasets == ("pain_scores", "participants")
    assert PainMixedModel.adjustable is False


@pytest.mark.parametrize("ds", ["demo", "sim"])
def test_matches_lmer(ref, fits, ds):
    r = ref[ds]["pain"]["tight"]
    res = fits[ds]
    t = res.table
    assert res.converged, res.message
    assert list(t.columns) == TIDY_COLUMNS
    assert TERM in set(t["term"])
    assert len(t) == len(r["terms"])
    # Measured: fixed effects 5e-9, SEs 4.3e-7, REML log-likelihood 8e-13. The SEs are lme4's
    # vcov (sigma^2 (X'V^-1X)^-1 given the variance parameters); what remains is where the two
    # optimisers stop on the flat REML surface (theta agrees to ~3e-7).
    close(t["estimate"], r["coef"], 1e-7)
    close(t["std_error"], r["se"], 1e-5)
    close(t["log_likelihood"].iloc[0], r["loglik"], 1e-10)
    vc = res.extras["variance_components"]
    close(-2 * t["log_likelihood"].iloc[0], r["reml_criterion"], 1e-10)
    theta = [float(x) for x in vc["theta"].iloc[0].split(",")]
    close(theta, r["theta"], 1e-5)
    close(vc.set_index("term").loc["sigma2", "variance"], r["sigma"] ** 2, 1e-5)


@pytest.mark.parametrize("ds", ["demo", "sim"])
def test_default_lmer_is_close(ref, fits, ds):
    """lme4's default optimiser stops a little earlier: SEs within 2.2e-6 (measured)."""
    r = ref[ds]["pain"]["default"]
    close(fits[ds].table["estimate"], r["coef"], 1e-7)
    close(fits[ds].table["std_error"], r["se"], 1e-5)


@pytest.mark.parametrize("ds", ["demo", "sim"])
def test_percent_change_matches_r(ref, fits, ds):
    r = ref[ds]["pain"]
    pc = fits[ds].extras["percent_change"]
    arms = pc[pc["row"] == "arm"].reset_index(drop=True)
    rp = pd.DataFrame(r["percent_change"]).rename(
        columns={"pct_change": "percent_change", "se_pct_change": "se_percent_change"}
    )
    assert list(arms["arm"]) == list(rp["arm"]) and list(arms["week"]) == list(rp["week"])
    # Measured: means 4e-9, SEs 1.2e-7, percent change 5e-9, its SE 3.9e-7.
    close(arms["mean_nrs"], rp["mean"], 1e-7)
    close(arms["se_mean"], rp["se_mean"], 1e-5)
    later = arms["week"] > 0
    close(arms.loc[later, "percent_change"], rp.loc[later.to_numpy(), "percent_change"], 1e-7)
    close(arms.loc[later, "se_percent_change"], rp.loc[later.to_numpy(), "se_percent_change"], 1e-5)
    assert (arms.loc[~later, "percent_change"] == 0).all()
    # the columns the claims stage reads
    assert {"arm", "week", "percent_change", "conf_low", "conf_high"} <= set(pc.columns)
    diff = pc[pc["row"] == "difference"].iloc[0]
    assert diff["week"] == 6
    close(diff["percent_change"], r["difference"]["estimate"], 1e-7)
    close(diff["se_percent_change"], r["difference"]["se"], 1e-5)
    assert diff["conf_low"] < diff["percent_change"] < diff["conf_high"]


def test_known_truth(fits):
    """Sim cohort: control arm's 30% reduction at week 6 is covered; the intervention's 82% is
    approached from below (NRS is rounded and clipped at 0, which shrinks large reductions)."""
    pc = fits["sim"].extras["percent_change"].set_index(["row", "arm", "week"])
    ctl = pc.loc[("arm", "control", 6)]
    assert ctl["conf_low"] < -30 < ctl["conf_high"]
    itv = pc.loc[("arm", "intervention", 6), "percent_change"]
    assert -84 < itv < -76


def test_claim_week_option():
    pain, participants = tables("demo")
    res = PainMixedModel().fit(
        ModelSpec("pain", "mixed_pain", options={"week": 4}),
        pain_scores=pain,
        participants=participants,
    )
    diff = res.extras["percent_change"].query("row == 'difference'")
    assert list(diff["week"]) == [4]


def test_claim_week_not_a_visit():
    pain, participants = tables("demo")
    res = PainMixedModel().fit(
        ModelSpec("pain", "mixed_pain", options={"week": 5}),
        pain_scores=pain,
        participants=participants,
    )
    assert "claim week 5" in res.message
    assert "difference" not in set(res.extras["percent_change"]["row"])


@pytest.mark.parametrize("case", ["empty", "single_arm", "missing", "one_week"])
def test_failures_do_not_raise(case):
    pain, participants = tables("demo")
    kw = {"pain_scores": pain, "participants": participants}
    if case == "empty":
        kw["pain_scores"] = pain.iloc[:0]
    elif case == "single_arm":
        kw["participants"] = participants.assign(arm="control")
    elif case == "missing":
        kw.pop("pain_scores")
    elif case == "one_week":
        kw["pain_scores"] = pain.merge(participants, on="participant_id").loc[
            lambda d: d["assessed_on"] == d["enrolled_on"], ["participant_id", "assessed_on", "nrs"]
        ]
    res = PainMixedModel().fit(ModelSpec("pain", "mixed_pain"), **kw)
    assert not res.converged and res.message
    assert list(res.table.columns) == TIDY_COLUMNS


# ---------------------------------------------------------------------------------------------
# Between-arm contrast (between_arm.csv): cLDA and ANCOVA against R, and against known truth
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ba_ref() -> dict:
    """tests/fixtures/counts/between_arm_reference.json (make_between_arm_reference.R)."""
    return json.loads((FIXTURES / "between_arm_reference.json").read_text())


def between(fits: dict, ds: str, method: str) -> pd.DataFrame:
    b = fits[ds].extras["between_arm"]
    return b[b["method"] == method].reset_index(drop=True)


def test_between_arm_table_is_declared_and_complete(fits):
    from recurstudy.models.pain import BETWEEN_ARM_COLUMNS, WITHIN_ARM_NOTE

    declared = {e.file for e in PainMixedModel.extras}
    assert set(fits["demo"].extras) == declared
    b = fits["demo"].extras["between_arm"]
    assert list(b.columns) == BETWEEN_ARM_COLUMNS
    assert list(b["method"].unique()) == ["cLDA", "ANCOVA"]
    assert b.groupby("method")["week"].apply(list).to_dict() == {
        "cLDA": [2, 4, 6, 12, 26],
        "ANCOVA": [2, 4, 6, 12, 26],
    }
    assert b["converged"].all() and (b["message"].fillna("") == "").all()
    assert list(b.loc[b["claim_week"], "week"]) == [6, 6]
    # the reduction is 1 - ratio and its interval the log-ratio interval mapped back
    np.testing.assert_allclose(b["reduction"], 1 - b["ratio"], rtol=0, atol=1e-15)
    np.testing.assert_allclose(b["conf_low"], 1 - b["ratio_conf_high"], rtol=0, atol=1e-15)
    assert (b["conf_low"] < b["reduction"]).all() and (b["reduction"] < b["conf_high"]).all()
    pc = fits["demo"].extras["percent_change"]
    assert (pc.loc[pc["row"] == "arm", "interpretation"] == WITHIN_ARM_NOTE).all()


@pytest.mark.parametrize("ds", ["demo", "sim"])
def test_clda_matches_lmer(ba_ref, fits, ds):
    """cLDA against lmer refitted tightly (bobyqa, rhoend 1e-12). Measured maximum relative
    differences: coefficients 1.5e-8, their SEs 1.3e-7, means 6.4e-9, ratio 7.8e-9, SE of the log
    ratio 6.4e-8, REML criterion 2.5e-8 absolute. The tolerances (1e-7 for estimates, 1e-6 for
    standard errors) are what two optimisers stopping on the same flat REML surface allow (theta
    agrees to ~1e-7); a wrong design (e.g. an arm term at baseline) moves the ratio by 1e-3."""
    r = ba_ref[ds]["clda"]["tight"]
    co = fits[ds].extras["clda_coefficients"]
    assert len(co) == len(r["terms"])
    close(co["estimate"], r["coef"], 1e-7)
    close(co["std_error"], r["se"], 1e-6)
    close(co["reml_criterion"].iloc[0], r["reml_criterion"], 1e-10)
    ours, rb = between(fits, ds, "cLDA"), pd.DataFrame(r["between_arm"])
    assert list(ours["week"]) == list(rb["week"])
    for col in ("mean_control", "mean_intervention", "difference", "ratio", "reduction"):
        close(ours[col], rb[col], 1e-7)
    for col in ("se_mean_control", "se_mean_intervention", "se_log_ratio", "std_error"):
        close(ours[col], rb[col], 1e-6)
    close(ours["conf_low"], rb["conf_low"], 1e-7)
    close(ours["conf_high"], rb["conf_high"], 1e-7)
    close(ours["statistic"], rb["log_ratio"] / rb["se_log_ratio"], 1e-6)
    # lme4's default optimiser stops earlier: within 1e-6 (estimates) and 5e-6 (SEs), measured
    d = pd.DataFrame(ba_ref[ds]["clda"]["default"]["between_arm"])
    close(ours["reduction"], d["reduction"], 1e-6)
    close(ours["se_log_ratio"], d["se_log_ratio"], 5e-6)


@pytest.mark.parametrize("ds", ["demo", "sim"])
def test_ancova_matches_lm(ba_ref, fits, ds):
    """ANCOVA is closed form (OLS): agreement with lm to 1e-10 relative (measured 6e-14; the
    p-values, as small as 1e-248, to 2e-11)."""
    ours, ra = between(fits, ds, "ANCOVA"), pd.DataFrame(ba_ref[ds]["ancova"])
    assert list(ours["week"]) == list(ra["week"])
    for col in ("n", "n_control", "n_intervention"):
        assert list(ours[col]) == list(ra[col])
    cols = (
        "baseline_mean",
        "mean_control",
        "mean_intervention",
        "ratio",
        "reduction",
        "se_log_ratio",
        "std_error",
        "conf_low",
        "conf_high",
        "p_value",
    )
    for col in cols:
        close(ours[col], ra[col], 1e-10)


def _true_reduction(week: int) -> float:
    from recurstudy.simulate import SimulationParams, expected_pain

    p = SimulationParams()  # both fixture cohorts use the default pain parameters
    return 1 - expected_pain(p, "intervention", week) / expected_pain(p, "control", week)


def test_expected_pain_is_the_simulators_mean():
    """The exact truth (rounded, clipped NRS) against one very large simulated cohort: every arm
    and week within 4 standard errors of the sample mean (n = 100,000, no dropout)."""
    from recurstudy.simulate import SimulationParams, expected_pain, simulate_cohort

    p = SimulationParams(n=100_000, seed=7, dropout=0.0)
    sim = simulate_cohort(p)
    df = sim["pain_scores"].merge(sim["participants"][["participant_id", "arm", "enrolled_on"]])
    days = (pd.to_datetime(df["assessed_on"]) - pd.to_datetime(df["enrolled_on"])).dt.days
    df["week"] = (days / 7).round().astype(int)
    for (arm, week), g in df.groupby(["arm", "week"]):
        se = g["nrs"].std() / np.sqrt(len(g))
        assert abs(g["nrs"].mean() - expected_pain(p, arm, week)) < 4 * se, (arm, week)


@pytest.mark.parametrize("method", ["cLDA", "ANCOVA"])
def test_between_arm_covers_truth(fits, method):
    """Sim cohort (n = 1500): the 95% interval at every visit holds the true between-arm
    reduction of mean NRS (72.1% at week 6: 1 - 1.08 / 3.85, not the 82% within-arm change)."""
    b = between(fits, "sim", method)
    truth = b["week"].map(_true_reduction)
    assert ((b["conf_low"] < truth) & (truth < b["conf_high"])).all(), b[["week", "reduction"]]


def test_between_arm_recovers_truth_over_replicates():
    """Replicates of the demo design (n = 300, 10% dropout, seeds 1000 + i): the mean estimated
    reduction at week 6 lies within 3 Monte Carlo SEs of the truth - cLDA over 16 replicates,
    ANCOVA over 200 - and the ANCOVA's 95% interval covers the truth in 95% +/- 3 MC SEs."""
    from recurstudy.models import pain as pm
    from recurstudy.simulate import SimulationParams, simulate_cohort

    truth = _true_reduction(6)
    spec = ModelSpec("pain", "mixed_pain")
    clda, ancova, covered = [], [], []
    for i in range(200):
        sim = simulate_cohort(SimulationParams(n=300, seed=1000 + i))
        df, _ = pm._prepare(spec, sim["pain_scores"], sim["participants"])
        a = pm.ancova_between_arm(spec, df, [0, 6], [], 6).iloc[0]
        ancova.append(a["reduction"])
        covered.append(a["conf_low"] <= truth <= a["conf_high"])
        if i < 16:
            weeks = sorted(df["week"].unique())
            c, _ = pm.clda_between_arm(spec, df, weeks, [], 6)
            clda.append(c.set_index("week").loc[6, "reduction"])
    for est in (np.array(clda), np.array(ancova)):
        mc_se = est.std(ddof=1) / np.sqrt(est.size)
        assert abs(est.mean() - truth) < 3 * mc_se, (est.mean(), truth, mc_se)
    coverage = np.mean(covered)
    assert abs(coverage - 0.95) < 3 * np.sqrt(0.95 * 0.05 / len(covered))
