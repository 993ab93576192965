"""Per-site effects, the DerSimonian-Laird meta-analysis and the site-stratified Andersen-Gill."""

import math

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES, r_reference
from scipy import stats

from recurstudy.models import ModelSpec
from recurstudy.sites import (
    NO_SITE,
    dersimonian_laird,
    meta_analysis,
    participant_sites,
    site_effect,
    site_slugs,
    stratified_andersen_gill,
)

SITES = FIXTURES / "sites"


def test_dersimonian_laird_equal_variances_by_hand():
    # y = 0, 2, 4 with v = 1: w = 1, y_F = 2, Q = 4 + 0 + 4 = 8 on 2 df, C = 3 - 3/3 = 2,
    # tau^2 = (8 - 2) / 2 = 3, I^2 = 6 / 8, w* = 1/4, pooled 2 with SE 1 / sqrt(3/4),
    # p(Q) = P(chi2_2 > 8) = exp(-4).
    out = dersimonian_laird([0.0, 2.0, 4.0], [1.0, 1.0, 1.0])
    assert out["k"] == 3 and out["q_df"] == 2
    assert out["q"] == pytest.approx(8.0, abs=1e-12)
    assert out["tau2"] == pytest.approx(3.0, abs=1e-12)
    assert out["i2"] == pytest.approx(0.75, abs=1e-12)
    assert out["estimate"] == pytest.approx(2.0, abs=1e-12)
    assert out["std_error"] == pytest.approx(1.0 / math.sqrt(0.75), abs=1e-12)
    assert out["q_p_value"] == pytest.approx(math.exp(-4.0), abs=1e-12)
    z = stats.norm.ppf(0.975)
    assert out["conf_low"] == pytest.approx(2.0 - z / math.sqrt(0.75), abs=1e-12)


def test_dersimonian_laird_homogeneous_truncates_tau2_at_zero():
    # y = 0, 1 with v = 1: Q = 0.5 < df = 1, so tau^2 = 0 and I^2 = 0: the fixed-effect answer.
    out = dersimonian_laird([0.0, 1.0], [1.0, 1.0])
    assert out["tau2"] == 0.0 and out["i2"] == 0.0
    assert out["q"] == pytest.approx(0.5, abs=1e-12)
    assert out["estimate"] == pytest.approx(0.5, abs=1e-12)
    assert out["std_error"] == pytest.approx(1.0 / math.sqrt(2.0), abs=1e-12)


def test_dersimonian_laird_unequal_variances_formula_written_out():
    y = np.array([-1.49, -0.97, -1.52, -0.98, -0.20])
    se = np.array([0.26, 0.22, 0.28, 0.28, 0.45])
    # DerSimonian and Laird (1986), written out term by term
    w = [1 / s**2 for s in se]
    sw = sum(w)
    yf = sum(wi * yi for wi, yi in zip(w, y, strict=True)) / sw
    q = sum(wi * (yi - yf) ** 2 for wi, yi in zip(w, y, strict=True))
    tau2 = max(0.0, (q - 4) / (sw - sum(wi**2 for wi in w) / sw))
    ws = [1 / (s**2 + tau2) for s in se]
    pooled = sum(wi * yi for wi, yi in zip(ws, y, strict=True)) / sum(ws)
    out = dersimonian_laird(y, se)
    assert tau2 > 0  # the constructed set is heterogeneous
    assert out["q"] == pytest.approx(q, rel=1e-12)
    assert out["tau2"] == pytest.approx(tau2, rel=1e-12)
    assert out["i2"] == pytest.approx((q - 4) / q, rel=1e-12)
    assert out["estimate"] == pytest.approx(pooled, rel=1e-12)
    assert out["std_error"] == pytest.approx(sum(ws) ** -0.5, rel=1e-12)


def test_site_slugs_are_safe_and_unique():
    slugs = site_slugs(["Site A", "Site/A", "B", "B"])
    assert sorted(slugs.values()) == ["B", "Site A", "Site/A"]
    assert all(s.replace("_", "").replace(".", "").replace("-", "").isalnum() for s in slugs)
    assert len(slugs) == 3


def test_missing_site_is_a_site_of_its_own():
    p = pd.DataFrame({"participant_id": ["a", "b"], "site": ["x", None]})
    assert list(participant_sites(p)) == ["x", NO_SITE]
    assert list(participant_sites(p.drop(columns="site"))) == [NO_SITE, NO_SITE]


def _cohort():
    cp = pd.read_csv(SITES / "demo_cp_sites.csv")
    cp["arm"] = pd.Categorical(cp["arm"], categories=["control", "intervention"])
    participants = cp.drop_duplicates("participant_id")[["participant_id", "arm", "site"]]
    return cp, participants.reset_index(drop=True)


def test_small_site_and_site_without_events_are_not_estimable_but_listed():
    cp, participants = _cohort()
    spec = ModelSpec("andersen_gill", "andersen_gill")
    # a site with 3 participants per arm (below min_cell = 5)
    small = participants.groupby("arm", observed=True).head(3).assign(site="tiny")
    # a site of 6 + 6 participants whose episodes are all removed
    quiet = participants.groupby("arm", observed=True).tail(6).assign(site="quiet")
    sites = participants.set_index("participant_id")["site"].copy()
    sites[small["participant_id"]] = "tiny"
    sites[quiet["participant_id"]] = "quiet"
    people = participants.assign(site=participants["participant_id"].map(sites))
    cp2 = cp.copy()
    in_quiet = cp2["participant_id"].isin(quiet["participant_id"])
    cp2.loc[in_quiet, "event"] = 0
    rows = [
        site_effect(spec, s, people, {"counting_process": cp2}, min_cell=5)
        for s in sorted(people["site"].unique())
    ]
    effects = pd.concat(rows, ignore_index=True).set_index("site")
    assert not effects.loc["tiny", "estimable"]
    assert "fewer than 5 participants" in effects.loc["tiny", "message"]
    assert not effects.loc["quiet", "estimable"]
    assert effects.loc["quiet", "message"] == "not estimable: no events"
    assert effects.loc["site_A", "estimable"]
    meta = meta_analysis(effects.reset_index())
    assert int(meta["k"].iloc[0]) == int(effects["estimable"].sum()) == 4


def test_site_effect_is_the_model_fitted_on_the_site():
    cp, participants = _cohort()
    spec = ModelSpec("andersen_gill", "andersen_gill")
    row = site_effect(spec, "site_B", participants, {"counting_process": cp}, min_cell=5)
    ids = set(participants.loc[participants["site"] == "site_B", "participant_id"])
    assert row["n_participants"].iloc[0] == len(ids)
    assert row["n_events"].iloc[0] == cp.loc[cp["participant_id"].isin(ids), "event"].sum()
    assert row["ratio"].iloc[0] == pytest.approx(math.exp(row["estimate"].iloc[0]), rel=1e-12)


@pytest.mark.parametrize("key,formula", [("arm", "arm"), ("adjusted", "arm + age")])
def test_stratified_andersen_gill_matches_r(key, formula):
    """R: coxph(Surv(start, stop, event) ~ arm + strata(site), cluster = participant_id)."""
    ref = r_reference(SITES / "sites_reference.json")["fits"][key]
    cp, participants = _cohort()
    spec = ModelSpec("andersen_gill", "andersen_gill", formula=formula)
    table = stratified_andersen_gill(spec, cp.drop(columns="site"), participants)
    assert list(table["model"].unique()) == ["andersen_gill_site_stratified"]
    np.testing.assert_allclose(table["estimate"], np.atleast_1d(ref["coef"]), rtol=1e-10)
    np.testing.assert_allclose(table["std_error"], np.atleast_1d(ref["robust_se"]), rtol=1e-8)
    assert table["log_likelihood"].iloc[0] == pytest.approx(ref["loglik"][1], rel=1e-12)
    assert table["n_events"].iloc[0] == ref["nevent"]
    assert table["robust"].all()
