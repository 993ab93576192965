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


def _crude(n_ep: np.ndarray, days: np.ndarray) -> tuple[float, float]:
    """Crude rate sum(N) / sum(T) and the robust SE of its log (participants as clusters)."""
    rate = n_ep.sum() / days.sum()
    return float(rate), float(np.sqrt(np.sum((n_ep - rate * days) ** 2)) / n_ep.sum())


def test_informative_dropout_concentrates_in_the_episode_prone():
    """dropout_frailty_link = 2: the same follow-up lengths (same share leaving early) go
    preferentially to high-frailty participants, so those who leave have a much higher episode
    rate than completers (equal rates without the link). As expected when dropout depends on the
    frailty alone: each arm's crude rate falls below its true marginal rate (the episode-prone
    contribute less time), while the crude rate ratio stays at the truth (randomisation
    balances the frailty, so both arms lose the same share). Tolerances: 3 robust SEs."""
    common = dict(
        n=4000,
        seed=5,
        dropout=0.3,
        frailty_var=1.0,
        rate_ratio=0.5,
        beta_age_per_10y=0.0,
        beta_prior_episode=0.0,
        beta_baseline_pain=0.0,
        risk_during_episodes=True,  # a Poisson process given the frailty, over total time
    )
    out = {}
    for link in (0.0, 2.0):
        p = SimulationParams(**common, dropout_frailty_link=link)
        t = simulate_cohort(p)
        pa, ep = t["participants"], t["episodes"]
        days = (pa["followup_end"] - pa["enrolled_on"]).dt.days.to_numpy()
        n_ep = ep.groupby("participant_id").size().reindex(pa["participant_id"], fill_value=0)
        n_ep = n_ep.to_numpy()
        left = days < p.followup_days
        assert np.array_equal(left, (pa["end_reason"] != "completed").to_numpy())
        ctrl = (pa["arm"] == "control").to_numpy()
        out[link] = {
            "days": np.sort(days),
            "left_vs_completed": _crude(n_ep[left], days[left]),
            "completed": _crude(n_ep[~left], days[~left]),
            "control": _crude(n_ep[ctrl], days[ctrl]),
            "intervention": _crude(n_ep[~ctrl], days[~ctrl]),
        }
        assert truth(p)["dropout_frailty_link"] == link
    assert np.array_equal(out[0.0]["days"], out[2.0]["days"])  # follow-up distribution kept

    def log_ratio(a, b):
        return np.log(a[0] / b[0]), np.hypot(a[1], b[1])

    lr0, se0 = log_ratio(out[0.0]["left_vs_completed"], out[0.0]["completed"])
    lr2, se2 = log_ratio(out[2.0]["left_vs_completed"], out[2.0]["completed"])
    assert abs(lr0) < 3 * se0, (lr0, se0)
    assert lr2 > np.log(1.5) + 3 * se2, (lr2, se2)  # leavers: over 1.5 times the rate
    for link in (0.0, 2.0):
        rate, se = out[link]["control"]
        z = (np.log(rate) - np.log(0.02)) / se
        assert (abs(z) < 3) if link == 0 else (z < -3), (link, rate, se)
        lr, se_lr = log_ratio(out[link]["intervention"], out[link]["control"])
        assert abs(lr - np.log(0.5)) < 3 * se_lr, (link, np.exp(lr), se_lr)
