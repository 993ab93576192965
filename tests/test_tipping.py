"""Tipping-point analysis of informative dropout (recurstudy.tipping): Rubin's rules by hand, the
completed data sets, the exact no-dropout case, delta = 1 with a known answer, the verdict-change
detection, determinism and the figure."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recurstudy.claims import verdict
from recurstudy.models import ModelSpec, fit_spec
from recurstudy.tipping import (
    TIPPING_COLUMNS,
    complete_data,
    draw,
    informative_dropouts,
    plot_tipping_point,
    rubin,
    tipping_point,
    tipping_summary,
)

REPO = Path(__file__).resolve().parents[1]
ARM = "arm[T.intervention]"


@cache
def _demo() -> dict[str, pd.DataFrame]:
    from recurstudy.config import load_config
    from recurstudy.derive import derive_all
    from recurstudy.validate import validate_cohort

    config = load_config(REPO / "config" / "config.yaml")
    tables = validate_cohort(config, REPO).tables
    data = derive_all(tables["participants"], tables["episodes"], config)
    return {
        "counting_process": data["counting_process"],
        "counts": data["counts"],
        "participants": tables["participants"],
    }


def demo() -> dict[str, pd.DataFrame]:
    return {k: v.copy() for k, v in _demo().items()}


def config(**tp) -> dict:
    claim = {
        "id": "episodes_68",
        "statement": "cut episodes by 68%",
        "metric": "rate_reduction",
        "claimed": 0.68,
        "model": "negbin_rate",
    }
    return {
        "arms": {"control": "control", "intervention": "intervention"},
        "claims": [claim],
        "tipping_point": {"deltas": [1.0, 3.0], "imputations": 5, "seed": 11, **tp},
    }


SPECS = {"negbin_rate": ModelSpec("negbin_rate", "negbin")}


# ------------------------------------------------------------------------------------------------
# Rubin's rules
# ------------------------------------------------------------------------------------------------


def test_rubin_by_hand():
    # q = 1, 2, 3; u = 0.5 each: Q = 2, W = 0.5, B = 1, T = 0.5 + (4/3) 1 = 11/6
    r = rubin([1.0, 2.0, 3.0], [0.5, 0.5, 0.5])
    assert r.estimate == 2.0 and r.within == 0.5 and r.between == 1.0
    assert r.variance == pytest.approx(11.0 / 6.0, rel=1e-15)
    lam = (4.0 / 3.0) / (11.0 / 6.0)  # 8/11
    assert r.df == pytest.approx(2.0 / lam**2, rel=1e-14)  # nu_old = (M - 1) / lambda^2
    # Barnard-Rubin with nu_com = 10: nu_obs = 11/13 * 10 * (1 - 8/11) = 30/13
    br = rubin([1.0, 2.0, 3.0], [0.5, 0.5, 0.5], df_complete=10)
    nu_old, nu_obs = 2.0 / lam**2, 30.0 / 13.0
    assert br.df == pytest.approx(1.0 / (1.0 / nu_old + 1.0 / nu_obs), rel=1e-14)
    r_ratio = (4.0 / 3.0) / 0.5
    assert r.fmi == pytest.approx((r_ratio + 2.0 / (r.df + 3.0)) / (r_ratio + 1.0), rel=1e-14)
    # no between-imputation variance: T = W, infinite df without a complete-data df
    same = rubin([0.3] * 4, [0.2, 0.1, 0.3, 0.2])
    assert same.variance == pytest.approx(0.2) and same.between == 0 and math.isinf(same.df)


# ------------------------------------------------------------------------------------------------
# Completed data
# ------------------------------------------------------------------------------------------------


def test_completed_data_add_the_imputed_episodes_consistently():
    data = demo()
    cp, counts, part = data["counting_process"], data["counts"], data["participants"]
    drop = informative_dropouts(cp, part, ["withdrawn"], 182.0)
    assert drop.ids.size == 18 and np.all(drop.remaining > 0)
    dr = draw(drop, math.log(0.02), 0.05, 2.0, seed=3, m=0)
    completed, k = complete_data(cp, counts, part, drop, dr, delta=2.0)
    ccp, cc = completed["counting_process"], completed["counts"]
    assert k > 0
    assert cc["n_episodes"].sum() == counts["n_episodes"].sum() + k
    assert cc["exposure_days"].sum() == pytest.approx(
        counts["exposure_days"].sum() + drop.remaining.sum()
    )
    # the counting process agrees with the counts, rows are (start, stop] back to back
    per = ccp.groupby("participant_id")
    assert (
        per["event"].sum().reindex(cc["participant_id"]).fillna(0).to_numpy() == cc["n_episodes"]
    ).all()
    np.testing.assert_allclose(
        per["gap"].sum().reindex(cc["participant_id"]).fillna(0).to_numpy(),
        cc["exposure_days"].to_numpy(dtype=float),
    )
    assert (ccp["stop"] > ccp["start"]).all()
    nxt = ccp.groupby("participant_id")["start"].shift(-1)
    inner = nxt.notna()
    np.testing.assert_array_equal(ccp.loc[inner, "stop"], nxt[inner])
    # every dropout now ends at the planned end, with episode numbers 1, 2, ... in order
    ends = per["stop"].max()
    assert (ends.loc[drop.ids] == 182.0).all()
    assert (per["episode"].diff().fillna(1) == 1).all()
    assert (
        completed["participants"].set_index("participant_id").loc[drop.ids, "end_reason"]
        == "completed"
    ).all()
    # common random numbers: more imputed episodes for every dropout at a larger delta
    more, k3 = complete_data(cp, counts, part, drop, dr, delta=3.0)
    assert k3 >= k
    assert (more["counts"]["n_episodes"].to_numpy() >= cc["n_episodes"].to_numpy()).all()


def test_imputed_counts_have_the_gamma_poisson_mean():
    """Mean imputed episodes over many imputations ~ delta * rate * sum(T - d) (the frailty and
    the rate draw have mean 1 and a log-normal factor exp(se^2 / 2) ~ 1.0001)."""
    data = demo()
    cp, counts, part = data["counting_process"], data["counts"], data["participants"]
    drop = informative_dropouts(cp, part, ["withdrawn"], 182.0)
    ks = [
        complete_data(cp, counts, part, drop, draw(drop, math.log(0.02), 0.01, 2.0, 5, m), 1.5)[1]
        for m in range(400)
    ]
    expected = 1.5 * 0.02 * drop.remaining.sum()
    # gamma-Poisson variance per imputation: sum mu_i + mu_i^2 / theta; MC SE of the mean
    mu = 1.5 * 0.02 * drop.remaining
    se = math.sqrt((mu.sum() + (mu**2).sum() / 2.0) / 400)
    assert abs(np.mean(ks) - expected) < 4 * se


# ------------------------------------------------------------------------------------------------
# The analysis
# ------------------------------------------------------------------------------------------------


def test_no_informative_dropout_gives_the_observed_estimate_exactly():
    data = demo()
    data["participants"]["end_reason"] = "completed"
    table = tipping_point(config(), SPECS, data)
    obs = fit_spec(SPECS["negbin_rate"], {"counts": data["counts"]}).table.set_index("term")
    for row in table.itertuples():
        assert row.log_ratio == obs.loc[ARM, "estimate"]
        assert row.std_error == pytest.approx(obs.loc[ARM, "std_error"], rel=1e-15)
        assert row.between_variance == 0 and row.verdict == row.reference_verdict
        assert math.isnan(row.tipping_delta)
    assert "no change over the grid" in tipping_summary(table)["tipping_point"].iloc[0]


def test_delta_one_for_control_dropouts_leaves_the_estimate_in_place():
    """Known setup: only control-arm withdrawals (the intervention arm's are marked completed),
    imputed at delta = 1, i.e. at the control rate they would have had anyway: the completed-
    data rate ratio stays at the observed one up to the imputation noise.  Observed log ratio
    -1.2047; 18 imputations of 10 participants' ~800 remaining days at 0.02/day add ~16 of
    ~480 control episodes.  Tolerance 0.03 on the log ratio (the SE of the estimate is 0.126)."""
    data = demo()
    p = data["participants"]
    p.loc[p["arm"] == "intervention", "end_reason"] = "completed"
    table = tipping_point(config(deltas=[1.0], imputations=18), SPECS, data)
    obs = fit_spec(SPECS["negbin_rate"], {"counts": data["counts"]}).table.set_index("term")
    row = table.iloc[0]
    assert row["n_imputed_participants"] == 10
    assert abs(row["log_ratio"] - obs.loc[ARM, "estimate"]) < 0.03
    assert row["between_variance"] > 0 and row["df"] > 10


def test_verdict_change_is_detected_at_the_first_delta_that_changes_it():
    """A constructed case: at delta = 40 every withdrawal's remaining time is filled at 40 times
    the control rate (~2 episodes per 2.5 days), which drags the reduction far below the claim.
    The tipping delta is the smallest grid delta whose verdict (recomputed here with the claims
    rule from the table's pooled estimate and SE) differs from the observed-data verdict."""
    data = demo()
    table = tipping_point(config(deltas=[40.0, 0.5, 1.0], imputations=4), SPECS, data)
    assert list(table["delta"]) == [0.5, 1.0, 40.0]  # sorted grid
    ref = table["reference_verdict"].iloc[0]
    assert ref == "supported"
    for row in table.itertuples():
        assert row.verdict == verdict(row.log_ratio, row.std_error, 0.68, 0.10)[0]
    changed = table.loc[table["verdict"] != ref, "delta"]
    assert changed.min() == 40.0 and (table["tipping_delta"] == 40.0).all()
    assert table.set_index("delta").loc[40.0, "estimate"] < 0.5
    summary = tipping_summary(table).iloc[0]
    assert summary["tipping_point"].startswith("verdict changes at delta = 40")


def test_deterministic_and_complete_columns():
    data = demo()
    a = tipping_point(config(imputations=3), SPECS, data)
    b = tipping_point(config(imputations=3), SPECS, demo())
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == TIPPING_COLUMNS
    c = tipping_point(config(imputations=3, seed=12), SPECS, demo())
    assert not np.allclose(a["log_ratio"], c["log_ratio"])


def test_claims_the_analysis_cannot_serve_get_a_row_saying_why():
    cfg = config()
    cfg["claims"].append(
        {
            "id": "first",
            "statement": "s",
            "metric": "hazard_reduction",
            "claimed": 0.5,
            "model": "cox1",
        }
    )
    specs = {**SPECS, "cox1": ModelSpec("cox1", "cox")}
    table = tipping_point(cfg, specs, demo())
    row = table[table["claim_id"] == "first"].iloc[0]
    assert row["verdict"] == "not estimable" and "marginal-rate" in row["note"]


def test_imputation_model_that_does_not_converge_gives_rows_not_a_crash(monkeypatch):
    """A tiny cohort (issue 12: 12 participants) where the crude glm.nb for the imputations does
    not converge: each claim gets a not-estimable row saying why; the workflow goes on."""
    from recurstudy import tipping

    def no_fit(counts, arms):
        raise ValueError("the imputation model (crude glm.nb) did not converge")

    monkeypatch.setattr(tipping, "_control_rate", no_fit)
    table = tipping_point(config(imputations=2), SPECS, demo())
    assert list(table.columns) == TIPPING_COLUMNS and len(table) == 1
    row = table.iloc[0]
    assert row["verdict"] == "not estimable" and "did not converge" in row["note"]


def test_figure():
    table = tipping_point(config(deltas=[1.0, 40.0], imputations=2), SPECS, demo())
    fig = plot_tipping_point(table, {"episodes_68": 0.68})
    ax = fig.axes[0]
    assert ax.get_title() == "episodes_68"
    assert any("verdict changes" in t.get_text() for t in ax.get_legend().get_texts())
    import matplotlib.pyplot as plt

    plt.close(fig)


@pytest.mark.parametrize("kind", ["andersen_gill", "pwp", "ipcw_andersen_gill"])
def test_counting_process_models_refit_on_the_completed_rows(kind):
    """A hazard claim read from a counting-process model: refitted on the completed rows
    (continuous imputed times; PWP keeps its episode strata; the IPCW model sees no dropout
    left, so its weights are 1)."""
    cfg = config(deltas=[1.0, 2.0], imputations=2)
    cfg["claims"][0].update(metric="hazard_reduction", model="m")
    specs = {"m": ModelSpec("m", kind)}
    table = tipping_point(cfg, specs, demo())
    if kind == "pwp":  # a conditional model: not a marginal rate, said so
        assert table["verdict"].iloc[0] == "not estimable"
        return
    assert table["log_ratio"].notna().all() and (table["between_variance"] > 0).all()
    assert (table["mean_imputed_episodes"].diff().dropna() > 0).all()


@pytest.mark.workflow
def test_rule_on_the_demo(tmp_path):
    """The Snakemake rule on the demo (validate, derive, tipping point; default grid of 7 deltas
    and 20 imputations): the table has every delta for the rate claim and a verdict each."""
    import shutil

    import yaml
    from conftest import run_workflow

    shutil.copytree(REPO / "data/demo", tmp_path / "cohort")
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    cfg["data"] = {
        "participants": "cohort/participants.csv",
        "episodes": "cohort/episodes.csv",
        "pain_scores": "cohort/pain_scores.csv",
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = run_workflow(tmp_path, "results/sensitivity/tipping_point.csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(tmp_path / "results/sensitivity/tipping_point.csv")
    assert list(table.columns) == TIPPING_COLUMNS
    assert list(table["delta"]) == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0]
    assert (table["imputations"] == 20).all() and table["verdict"].notna().all()


def test_cohort_without_end_reason_gets_a_row_saying_why():
    """end_reason is optional in the contract (e.g. survival::cgd): no dropout can be told
    apart, so the analysis is not done, with the reason, and the summary never says "no
    change over the grid"."""
    data = demo()
    data["participants"] = data["participants"].drop(columns="end_reason")
    table = tipping_point(config(imputations=2), SPECS, data)
    assert list(table.columns) == TIPPING_COLUMNS
    assert set(table["verdict"]) == {"not done"}
    assert table["note"].str.contains("no end_reason column").all()
    summary = tipping_summary(table)
    assert summary["tipping_point"].str.contains("not done: the participants table").all()
    assert not summary["tipping_point"].str.contains("no change").any()


def test_imputation_model_that_fails_gives_rows_saying_why(monkeypatch):
    """A tiny cohort whose crude glm.nb does not converge: 'not estimable' rows with the reason
    (the workflow goes on), not an exception."""
    import recurstudy.tipping as tipping

    def fails(counts, arms):
        raise ValueError("the imputation model (crude glm.nb) did not converge")

    monkeypatch.setattr(tipping, "_control_rate", fails)
    table = tipping_point(config(imputations=2), SPECS, demo())
    assert set(table["verdict"]) == {"not estimable"}
    assert table["note"].str.contains("did not converge").all()
    assert tipping_summary(table)["tipping_point"].str.startswith("not estimable").all()
