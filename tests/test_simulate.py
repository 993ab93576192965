"""The simulator: deterministic bytes, the contract's format, and recovery of its own truth."""

import json

import numpy as np
import statsmodels.api as sm

from recurstudy.cli import main
from recurstudy.derive import counts
from recurstudy.simulate import SimulationParams, simulate_cohort, truth


def test_same_seed_same_bytes(tmp_path):
    for d in ("a", "b"):
        assert main(["simulate", "--out", str(tmp_path / d), "--n", "120", "--seed", "7"]) == 0
    for name in ("participants.csv", "episodes.csv", "pain_scores.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    meta = json.loads((tmp_path / "a" / "truth.json").read_text())
    other = json.loads((tmp_path / "b" / "truth.json").read_text())
    assert meta["params"] == other["params"] and meta["counts"] == other["counts"]
    assert meta["params"]["n"] == 120 and meta["truth"]["rate_ratio"] == 0.32
    assert "recurstudy simulate" in meta["command"]


def test_shipped_demo_is_reproducible(tmp_path, repo):
    assert main(["simulate", "--preset", "demo", "--out", str(tmp_path)]) == 0
    for name in ("participants.csv", "episodes.csv", "pain_scores.csv"):
        assert (tmp_path / name).read_bytes() == (repo / "data/demo" / name).read_bytes()
    meta = json.loads((repo / "data/demo/truth.json").read_text())
    assert meta["command"] == "recurstudy simulate --preset demo --out data/demo"


def test_contract_shape():
    t = simulate_cohort(SimulationParams(n=400, seed=3))
    p, e, s = t["participants"], t["episodes"], t["pain_scores"]
    assert p["participant_id"].is_unique and set(p["arm"]) == {"control", "intervention"}
    assert (p["arm"] == "control").sum() == 200  # balanced allocation
    m = e.merge(p, on="participant_id")
    assert (m["onset_on"] > m["enrolled_on"]).all() and (m["onset_on"] <= m["followup_end"]).all()
    assert not e.duplicated(["participant_id", "onset_on"]).any()
    res = m["resolved_on"].dropna()
    assert (res >= m.loc[res.index, "onset_on"]).all()
    ms = s.merge(p, on="participant_id")
    assert (ms["assessed_on"] >= ms["enrolled_on"]).all()
    assert (ms["assessed_on"] <= ms["followup_end"]).all()
    assert s["nrs"].between(0, 10).all()
    weeks = ((ms["assessed_on"] - ms["enrolled_on"]).dt.days // 7).unique()
    assert set(weeks) <= {0, 2, 4, 6, 12, 26}


def test_recovers_rate_ratio_and_dropout():
    """On 20,000 participants the Poisson rate ratio (robust SE) is within 4 SE of the truth."""
    params = SimulationParams(n=20000, seed=11)
    t = simulate_cohort(params)
    config = {
        "arms": {"control": "control", "intervention": "intervention"},
        "covariates": {},
        "exclude_episode_time": True,  # the simulated intensity applies to at-risk time
    }
    c = counts(t["participants"], t["episodes"], config)
    c = c[c["exposure_days"] > 0]
    X = sm.add_constant((c["arm"] == "intervention").astype(float).to_numpy())
    fit = sm.GLM(
        c["n_episodes"].to_numpy(),
        X,
        family=sm.families.Poisson(),
        offset=np.log(c["exposure_days"].to_numpy()),
    ).fit(cov_type="HC0")
    est, se = fit.params[1], fit.bse[1]
    assert abs(est - np.log(params.rate_ratio)) < 4 * se, (np.exp(est), se)
    assert se < 0.03  # the check has teeth: a 10% error in the rate ratio would fail it
    dropped = (t["participants"]["end_reason"] != "completed").mean()
    assert abs(dropped - params.dropout) < 4 * np.sqrt(0.1 * 0.9 / params.n)


def test_truth_records_estimands():
    tr = truth(SimulationParams())
    assert tr["rate_reduction"] == 0.68 and tr["negbin_theta"] == 2.0
    assert tr["pain_reduction_at_week_6"] == {"control": 0.30, "intervention": 0.82}
