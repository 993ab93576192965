"""The survival model layer against R's survival package (fixtures in tests/fixtures/survival).

The datasets are the demo cohort and a second simulated cohort (n = 800, frailty variance 1,
20% drop-out), derived as the workflow derives them, plus the same cohort without the days inside
episodes (gaps between intervals) and a tiny hand-checkable Kaplan-Meier case.  The references
come from R 4.2 / survival 3.5-3 (``make_survival_reference.R``).  The models run through
``fit_spec``, the path the workflow uses.

Where the estimator is the same as R's the tolerance is relative 1e-8 (measured differences are
around 1e-12, i.e. rounding); counts and time points must match exactly.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES, num, r_reference, read_cohort

from recurstudy.models import ModelSpec, fit_spec
from recurstudy.models.coxzph import cox_zph, zph_time_transform
from recurstudy.models.survival import km_quantile, mean_cumulative_function, ph_test

FIX = FIXTURES / "survival"
RTOL = 1e-8
ADJ = "arm + age + prior_episodes + baseline_pain"
ARM = "arm[T.intervention]"


def reference() -> dict:
    return r_reference(FIX / "survival_reference.json")


def read(stem: str) -> pd.DataFrame:
    return read_cohort(FIX / f"{stem}.csv")


def assert_rel(actual, expected, what: str, rtol: float = RTOL) -> None:
    """Relative agreement, NaN where R has NA."""
    a = np.asarray(actual, dtype=float).reshape(-1)
    e = num(expected)
    assert a.shape == e.shape, f"{what}: {a.shape} values, R has {e.shape}"
    assert np.array_equal(np.isnan(a), np.isnan(e)), f"{what}: NaN pattern differs from R"
    ok = ~np.isnan(e)
    rel = np.abs(a[ok] - e[ok]) / np.maximum(np.abs(e[ok]), 1e-300)
    worst = float(rel.max()) if rel.size else 0.0
    assert worst <= rtol, f"{what}: max relative difference {worst:.2e} > {rtol:.0e}"


# ------------------------------------------------------------------------------------------------
# Kaplan-Meier, log-rank, medians, mean cumulative function
# ------------------------------------------------------------------------------------------------


@cache
def km_result(cohort: str):
    data = {
        "first_episode": read(f"{cohort}_first_episode"),
        "counting_process": read(f"{cohort}_counting_process"),
    }
    res = fit_spec(ModelSpec("km_first_episode", "kaplan_meier"), data)
    assert res.converged, res.message
    return res


@pytest.mark.parametrize("cohort", ["demo", "sim", "tiny"])
def test_kaplan_meier_table_matches_survfit(cohort):
    table = km_result(cohort).extras["survival"]
    for ref in reference()[cohort]["km"]:
        arm = ref["arm"]
        got = table[table["arm"] == arm]
        for col, key in [("time", "time"), ("n_risk", "n_risk"), ("n_event", "n_event")]:
            np.testing.assert_array_equal(got[col].to_numpy(float), num(ref[key]), f"{arm} {col}")
        np.testing.assert_array_equal(got["n_censor"].to_numpy(float), num(ref["n_censor"]))
        assert_rel(got["surv"], ref["surv"], f"{cohort} {arm} surv")
        # std_err is summary.survfit's (of S); survfit's own std.err is of -log S.
        assert_rel(got["std_err"], ref["std_err_surv"], f"{cohort} {arm} std_err")
        with np.errstate(invalid="ignore", divide="ignore"):
            log_se = np.where(got["surv"] > 0, got["std_err"] / got["surv"], np.nan)
        assert_rel(log_se, ref["std_err_log"], f"{cohort} {arm} std_err of -log S")
        assert_rel(got["std_err_log"], ref["std_err_log"], f"{cohort} {arm} std_err_log")
        assert_rel(got["conf_low"], ref["lower"], f"{cohort} {arm} lower (log)")
        assert_rel(got["conf_high"], ref["upper"], f"{cohort} {arm} upper (log)")


@pytest.mark.parametrize("cohort", ["demo", "sim", "tiny"])
def test_median_and_its_interval_match_quantile_survfit(cohort):
    med = km_result(cohort).extras["medians"].set_index("arm")
    ref = reference()[cohort]["median"]
    arms = ref["arm"]
    assert_rel(med.loc[arms, "median_time"], ref["median"], f"{cohort} median")
    assert_rel(med.loc[arms, "conf_low"], ref["lower"], f"{cohort} median lower")
    assert_rel(med.loc[arms, "conf_high"], ref["upper"], f"{cohort} median upper")


def test_median_conventions_by_hand():
    # exactly 0.5 from day 2 until the drop on day 3: the midpoint, as R
    assert km_quantile([1, 2, 3, 4], [0.75, 0.5, 0.25, 0.0]) == 2.5
    # ends on a plateau at exactly 0.5: midpoint of its start and the last time point
    assert km_quantile([1, 2, 3, 4], [0.75, 0.5, 0.5, 0.5]) == 3.0
    assert km_quantile([1, 2, 5], [0.75, 0.4, 0.3]) == 2.0
    assert np.isnan(km_quantile([1, 2], [0.9, 0.6]))


@pytest.mark.parametrize("cohort", ["demo", "sim", "tiny"])
def test_logrank_matches_survdiff(cohort):
    res = km_result(cohort)
    ref = reference()[cohort]["logrank"]
    lr = res.extras["logrank"].iloc[0]
    assert_rel(lr["statistic"], ref["chisq"], f"{cohort} log-rank chi-square")
    assert_rel(lr["p_value"], ref["p"], f"{cohort} log-rank p")
    assert lr["df"] == ref["df"]
    assert_rel(res.table["statistic"], ref["chisq"], "tidy statistic")


@pytest.mark.parametrize("cohort", ["demo", "sim", "sim_excl", "tiny"])
def test_mean_cumulative_function_matches_nelson_aalen(cohort):
    if cohort == "sim_excl":  # the KM model needs a first-episode table; the MCF does not use it
        data = {
            "first_episode": read("sim_first_episode"),
            "counting_process": read(cohort + "_counting_process"),
        }
        res = fit_spec(ModelSpec("km", "kaplan_meier"), data)
    else:
        res = km_result(cohort)
    mcf = res.extras["mcf"]
    for ref in reference()[cohort]["mcf"]:
        got = mcf[mcf["arm"] == ref["arm"]]
        np.testing.assert_array_equal(got["time"].to_numpy(float), num(ref["time"]))
        np.testing.assert_array_equal(got["n_risk"].to_numpy(float), num(ref["n_risk"]))
        np.testing.assert_array_equal(got["n_event"].to_numpy(float), num(ref["n_event"]))
        assert_rel(got["mcf"], ref["cumhaz"], f"{cohort} {ref['arm']} MCF")
        # robust: std.chaz of survfit(..., id = participant_id, robust = TRUE) (clustered IJ)
        assert_rel(got["std_err"], ref["std_chaz_robust"], f"{cohort} {ref['arm']} robust SE")
        # naive: std.chaz without an id, sqrt(sum d / Y^2)
        assert_rel(got["std_err_naive"], ref["std_chaz_naive"], f"{cohort} {ref['arm']} naive SE")
        # plain interval of plot.survfit(cumhaz = TRUE), lower limit floored at 0
        assert_rel(got["conf_low"], ref["lower"], f"{cohort} {ref['arm']} MCF lower")
        assert_rel(got["conf_high"], ref["upper"], f"{cohort} {ref['arm']} MCF upper")


@pytest.mark.parametrize("cohort", ["demo", "sim_excl"])
def test_mcf_variance_does_not_depend_on_the_chunking(cohort):
    cp = read(cohort + "_counting_process")
    cp = cp[cp["arm"] == "control"]
    whole = mean_cumulative_function(cp)
    for chunk in (1, 7, 10_000):
        parts = mean_cumulative_function(cp.sample(frac=1.0, random_state=chunk), chunk_size=chunk)
        pd.testing.assert_frame_equal(parts, whole, check_exact=False, rtol=1e-12)


# ------------------------------------------------------------------------------------------------
# Cox, Andersen-Gill, PWP
# ------------------------------------------------------------------------------------------------

COX_CASES = [
    (cohort, key, spec)
    for cohort in ("demo", "sim")
    for key, spec in [
        ("cox", ModelSpec("cox_first_episode", "cox")),
        ("cox_adjusted", ModelSpec("cox_first_episode_adjusted", "cox", ADJ)),
    ]
]
RECURRENT = [
    ("ag", "andersen_gill", {}),
    ("pwp_total", "pwp", {"timescale": "total"}),
    ("pwp_gap", "pwp", {"timescale": "gap"}),
]
RECURRENT_CASES = [
    (cohort, key + suffix, ModelSpec(key + suffix, kind, formula, options))
    for cohort in ("demo", "sim", "sim_excl")
    for key, kind, options in RECURRENT
    for suffix, formula in [("", "arm"), ("_adjusted", ADJ)]
]


def _reference_fit(cohort: str, key: str) -> dict:
    ref = reference()[cohort]
    return ref[key] if key.startswith("cox") else ref["recurrent"][key]


def _data_for(cohort: str, key: str) -> dict:
    if key.startswith("cox"):
        return {"first_episode": read(f"{cohort}_first_episode")}
    return {"counting_process": read(f"{cohort}_counting_process")}


@pytest.mark.parametrize(
    ("cohort", "key", "spec"),
    COX_CASES + RECURRENT_CASES,
    ids=[f"{c}-{k}" for c, k, _ in COX_CASES + RECURRENT_CASES],
)
def test_cox_models_match_coxph(cohort, key, spec):
    ref = _reference_fit(cohort, key)
    res = fit_spec(spec, _data_for(cohort, key))
    assert res.converged, res.message
    table = res.table
    what = f"{cohort} {key}"
    assert table["term"].iloc[0] == ARM
    assert len(table) == num(ref["coef"]).size
    assert_rel(table["estimate"], ref["coef"], f"{what} coef")
    robust = ref["robust_se"] is not None
    assert bool(table["robust"].iloc[0]) == robust
    assert_rel(table["std_error"], ref["robust_se"] if robust else ref["naive_se"], f"{what} se")
    assert_rel(res.extras["naive"]["std_error"], ref["naive_se"], f"{what} naive se")
    assert_rel(table["log_likelihood"].iloc[0], ref["loglik"][1], f"{what} loglik")
    fit = res.extras["fit"].set_index("quantity")["value"]
    assert_rel(float(fit["loglik_null"]), ref["loglik"][0], f"{what} null loglik")
    tests = res.extras["tests"].set_index("test")
    assert_rel(tests.loc["likelihood_ratio", "statistic"], ref["lrt"], f"{what} LR test")
    assert_rel(tests.loc["wald", "statistic"], ref["wald"], f"{what} Wald test")
    assert_rel(tests.loc["score", "statistic"], ref["score"], f"{what} score test")
    assert int(table["n_events"].iloc[0]) == ref["nevent"]


# ------------------------------------------------------------------------------------------------
# Proportional-hazards test: R survival 3.x cox.zph
# ------------------------------------------------------------------------------------------------


def _assert_zph(got: pd.DataFrame, ref: dict, what: str, names: list[str] | None = None) -> None:
    assert list(got["term"]) == (names or ref["term"]), what
    assert_rel(got["statistic"], ref["chisq"], f"{what} chi-square")
    np.testing.assert_array_equal(got["df"].to_numpy(float), num(ref["df"]))
    assert_rel(got["p_value"], ref["p"], f"{what} p")


def _r_terms(ref_terms: list[str]) -> list[str]:
    return [ARM if t == "arm" else t for t in ref_terms]


@pytest.mark.parametrize(
    ("cohort", "key", "spec"), COX_CASES, ids=[f"{c}-{k}" for c, k, _ in COX_CASES]
)
def test_ph_test_of_cox_fit_matches_cox_zph(cohort, key, spec):
    res = fit_spec(spec, _data_for(cohort, key))
    ref = _reference_fit(cohort, key)["zph"]
    _assert_zph(res.extras["ph_test"], ref, f"{cohort} {key}", _r_terms(ref["term"]))


ZPH_LAYOUT = {
    "ag": {"stop": "stop", "start": "start"},
    "pwp_total": {"stop": "stop", "start": "start", "strata": "episode"},
    "pwp_gap": {"stop": "gap", "strata": "episode"},
}


@pytest.mark.parametrize(
    ("cohort", "key", "spec"), RECURRENT_CASES, ids=[f"{c}-{k}" for c, k, _ in RECURRENT_CASES]
)
def test_ph_test_of_recurrent_fits_matches_cox_zph(cohort, key, spec):
    layout = ZPH_LAYOUT[key.removesuffix("_adjusted")]
    got = ph_test(spec, read(f"{cohort}_counting_process"), **layout)
    ref = _reference_fit(cohort, key)["zph"]
    _assert_zph(got, ref, f"{cohort} {key}", _r_terms(ref["term"]))


def _sim_first_episode() -> pd.DataFrame:
    df = read("sim_first_episode")
    df["pcat"] = pd.Categorical(np.minimum(df["prior_episodes"], 2))
    return df


@pytest.mark.parametrize("variant", ["breslow", "rank", "identity", "log"])
def test_cox_zph_ties_and_transforms(variant):
    ref = reference()["zph_variants"][variant]
    df = _sim_first_episode()
    ties = ref["ties"]
    spec = ModelSpec("cox", "cox", ADJ, {"ties": ties})
    res = fit_spec(spec, {"first_episode": df})
    assert_rel(res.table["estimate"], ref["coef"], f"{variant} coef")
    if ref["transform"] == "km":
        got = res.extras["ph_test"]
    else:
        X = df[["age", "prior_episodes", "baseline_pain"]].assign(
            arm=(df["arm"] == "intervention").astype(float)
        )[["arm", "age", "prior_episodes", "baseline_pain"]]
        got = cox_zph(
            X, df["time"], df["event"], res.table["estimate"], ties=ties, transform=ref["transform"]
        )
    _assert_zph(got, ref, variant, _r_terms(ref["term"]) if ref["transform"] == "km" else None)


def test_cox_zph_factor_term_has_one_multi_df_test():
    df = _sim_first_episode()
    spec = ModelSpec("cox", "cox", "arm + pcat + age")
    ref = reference()["zph_variants"]["factor_terms"]
    res = fit_spec(spec, {"first_episode": df})
    assert_rel(res.table["estimate"], ref["coef"], "coef")
    _assert_zph(res.extras["ph_test"], ref, "terms = TRUE", [ARM, "pcat", "age", "GLOBAL"])
    # terms = FALSE: one test per column
    cols = reference()["zph_variants"]["factor_columns"]
    X = pd.DataFrame(
        {
            "arm": (df["arm"] == "intervention").astype(float),
            "pcat1": (df["pcat"] == 1).astype(float),
            "pcat2": (df["pcat"] == 2).astype(float),
            "age": df["age"].astype(float),
        }
    )
    got = cox_zph(X, df["time"], df["event"], res.table["estimate"])
    _assert_zph(got, cols, "terms = FALSE", ["arm", "pcat1", "pcat2", "age", "GLOBAL"])


def test_cox_zph_counting_process_breslow_and_strata_rank():
    cp = read("sim_counting_process")
    ref = reference()["zph_variants"]["ag_breslow"]
    spec = ModelSpec("ag", "andersen_gill", ADJ, {"ties": "breslow"})
    got = ph_test(spec, cp, stop="stop", start="start")
    _assert_zph(got, ref, "AG Breslow", _r_terms(ref["term"]))

    ref = reference()["zph_variants"]["pwp_total_rank"]
    res = fit_spec(ModelSpec("pwp", "pwp", ADJ, {"timescale": "total"}), {"counting_process": cp})
    X = cp[["age", "prior_episodes", "baseline_pain"]].assign(
        arm=(cp["arm"] == "intervention").astype(float)
    )[["arm", "age", "prior_episodes", "baseline_pain"]]
    got = cox_zph(
        X,
        cp["stop"],
        cp["event"],
        res.table["estimate"],
        start=cp["start"],
        strata=cp["episode"],
        transform="rank",
    )
    _assert_zph(
        got, ref, "PWP total, rank", ["arm", "age", "prior_episodes", "baseline_pain", "GLOBAL"]
    )


def test_cox_zph_is_invariant_to_covariate_shift_and_aliased_columns():
    df = _sim_first_episode()
    X = pd.DataFrame({"arm": (df["arm"] == "intervention").astype(float), "age": df["age"] * 1.0})
    coef = fit_spec(ModelSpec("c", "cox", "arm + age"), {"first_episode": df}).table["estimate"]
    base = cox_zph(X, df["time"], df["event"], coef.to_numpy())
    shifted = cox_zph(X + [3.0, -40.0], df["time"], df["event"], coef.to_numpy())
    assert_rel(shifted["statistic"], base["statistic"].to_numpy(), "shifted X", 1e-9)
    # an aliased (NaN) coefficient drops its column and its test, as R
    X2 = X.assign(age2=X["age"])
    got = cox_zph(X2, df["time"], df["event"], np.append(coef.to_numpy(), np.nan))
    assert list(got["term"]) == ["arm", "age", "GLOBAL"]
    assert_rel(got["statistic"], base["statistic"].to_numpy(), "aliased column", 1e-12)


def test_km_transform_is_left_continuous():
    # no censoring, times 1..4: S = .75, .5, .25, 0; g(t) = 1 - S(t-)
    g = zph_time_transform(np.array([1.0, 2, 3, 4]), np.ones(4, bool))
    np.testing.assert_allclose(g, [0.0, 0.25, 0.5, 0.75])
